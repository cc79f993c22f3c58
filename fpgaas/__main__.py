from fpgaas.cli import main

raise SystemExit(main())
