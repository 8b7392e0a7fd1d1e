package rabbitmq

// What the external tests (package rabbitmq_test) use of the internal ones.
var (
	ServerFor    = serverFor
	Unique       = unique
	TestDelivery = testDelivery
)
