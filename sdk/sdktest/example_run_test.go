package sdktest_test

import "testing"

// TestExampleSink runs Example_sink's plugin through the suite, as its test would.
func TestExampleSink(t *testing.T) { testNotesSink(t) }
