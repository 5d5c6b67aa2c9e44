// Package archtest holds no code, only tests of the module's architecture:
// the import-graph rules written up in docs/architecture.md.
package archtest
