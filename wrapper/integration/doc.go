// Package integration runs the built wrapper binary against the real bridge, host-local,
// loopback and flannel plugins inside throwaway network namespaces. Its tests need root
// and CNI_PATH (both provided by `make test`); the package holds no production code.
package integration
