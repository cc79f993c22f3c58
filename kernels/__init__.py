"""The contract between the builder and the service.

`kernels` owns what both sides must agree on: the artifact format (`kernels.artifact`),
the kernel C++ templates (`kernels/templates/`), the CPU twin of the kernel
(`kernels.twin`) and the domain exception tree (`kernels.errors`).
"""
