package plugin

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkFileDigest hashes a 20 MB file, the size of the larger first-party plugin binaries: what
// pinning costs at each load and start, and what a spec cache entry costs to check when the binary's
// identity changed.
func BenchmarkFileDigest(b *testing.B) {
	path := filepath.Join(b.TempDir(), "bin")
	data := make([]byte, 20<<20)
	rand.Read(data)
	if err := os.WriteFile(path, data, 0o755); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := FileDigest(path); err != nil {
			b.Fatal(err)
		}
	}
}

func TestFileDigest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("test"), 0o644); err != nil {
		t.Fatal(err)
	}
	// sha256sum of "test".
	if d, err := FileDigest(path); err != nil || d != "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" || !ValidDigest(d) {
		t.Errorf("FileDigest = %q, %v", d, err)
	}
	if _, err := FileDigest(path + ".missing"); err == nil {
		t.Error("FileDigest of a missing file succeeded")
	}
}
