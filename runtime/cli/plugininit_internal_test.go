package cli

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestFirstSDK checks how plugin init picks the SDK without --sdk: the first candidate that holds it, and
// a clear error when none does.
func TestFirstSDK(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	sdkDir := filepath.Join(filepath.Dir(file), "..", "..", "sdk")
	missing := filepath.Join(t.TempDir(), "sdk")
	if got, err := firstSDK([]string{missing, sdkDir}); err != nil || got != sdkDir {
		t.Fatalf("firstSDK = %q, %v; want %q", got, err, sdkDir)
	}
	_, err := firstSDK([]string{missing})
	if err == nil || !strings.Contains(err.Error(), "no SDK found (pass --sdk DIR, the sdk directory of a sluice checkout)") ||
		!strings.Contains(err.Error(), missing) {
		t.Fatalf("firstSDK with no SDK = %v, want an error naming --sdk and %s", err, missing)
	}
	_, err = firstSDK(nil)
	if err == nil || !strings.Contains(err.Error(), "pass --sdk DIR") {
		t.Fatalf("firstSDK with no candidates = %v, want an error naming --sdk", err)
	}
}
