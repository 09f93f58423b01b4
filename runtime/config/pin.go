package config

import (
	"regexp"
	"strings"
	"unicode/utf8"
)

// sha256RE is how a stage's sha256 key is written: 64 hex digits, as sha256sum prints them.
var sha256RE = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

// sha256 reads a stage's sha256 key into s: the SHA-256 its plugin's binary must have.
func (v *validator) sha256(n *node, s *Stage) {
	d, ok := v.stringKey(n, "sha256")
	switch {
	case !ok:
	case strings.HasPrefix(d, "sha256:"):
		v.errorf(n.pos, `sha256: write the 64 hex digits without the "sha256:" prefix`)
	case !sha256RE.MatchString(d):
		v.errorf(n.pos, "sha256: want the SHA-256 of the plugin binary, 64 hex digits as sha256sum prints them, got %d characters: %s",
			utf8.RuneCountInString(d), quote(d))
	case s.InProcess:
		v.errorf(n.pos, "sha256: an in_process stage runs inside sluice, with no plugin binary to pin; remove sha256 or in_process")
	default:
		s.SHA256, s.SHA256Pos = strings.ToLower(d), n.pos
	}
}
