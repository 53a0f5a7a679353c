package issuer

// Exported for the external tests (package issuer_test).
var (
	TestClients  = testClients
	PublicClient = publicClient
)
