"""The build contract between the service and the builder workers (both import it, never each other).

- `records`: a build's states, options and record (`BuildRecord`), and the stages it reports.
- `queue`: the procrastinate `App`, the task's name and arguments, and the `BuildQueue` seam the
  server submits to and reads builds from.
- `database`: the SQL of fpgaas's own tables (builds, wanted versions) beside procrastinate's.
- `store`: the `ArtifactStore` seam (a directory now; room for object storage) with uploads,
  staging, logs and the atomic publish of a sealed artifact.
- `postgres`: the embedded PostgreSQL of `make serve` and the tests.

Everything here needs the `server` or `builder` extra (procrastinate, psycopg).
"""
