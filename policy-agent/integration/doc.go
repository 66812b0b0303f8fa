// Package integration holds the policy agent's end-to-end tests: the real policy server on
// a real Postgres, the real wrapper and bridge plugins building a cell in throwaway network
// namespaces, and the built agent enforcing policies there. They need root, Postgres
// (DATABASE_URL) and CNI_PATH, which `make test` provides; the package has no production code.
package integration
