"""The contract between the builder and the service.

`kernels` owns what both sides must agree on: the artifact format (`fpgaas.kernels.artifact`),
the kernel C++ templates (`kernels/templates/`), the CPU twin of the kernel
(`fpgaas.kernels.twin`) and the domain exception tree (`fpgaas.kernels.errors`).
"""
