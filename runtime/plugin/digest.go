package plugin

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"regexp"
)

// FileDigest returns the SHA-256 of the file at path, in lower-case hex: what a connector file's sha256
// key and sluice.lock pin a plugin binary to.
func FileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

var digestRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ValidDigest reports whether s is a SHA-256 digest as FileDigest writes it: 64 lower-case hex digits.
func ValidDigest(s string) bool { return digestRE.MatchString(s) }
