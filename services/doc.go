// Package services starts the real servers that sluice's tests and demo run against — redis-server,
// mongo-java-server and Apache Kafka — as child processes on 127.0.0.1, each in its own directory with its
// log kept for error messages.
//
// Tests call the Start* functions with their testing.TB: the server is stopped when the test ends. The
// `services` command (cmd/services, used by `make services` and `make demo`) starts the same servers in the
// background and stops them again.
//
// Nothing here is a mock: when a server cannot be started (redis-server not installed, Maven Central not
// reachable), the function fails with a message saying what to install; tests never skip.
package services
