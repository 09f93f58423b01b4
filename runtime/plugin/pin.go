package plugin

import (
	"fmt"

	"github.com/sluicehq/sluice/sdk"
)

// Pin is a SHA-256 digest a plugin's binary must have, and where it was written.
type Pin struct {
	// SHA256 is the digest in lower-case hex (see FileDigest).
	SHA256 string
	// Where is where the digest was written, "file:line:col".
	Where string
	// Lock tells that it was written in a lock file (by `sluice plugins lock`), not in a connector file.
	Lock bool
}

// Pin makes Start refuse to start the binary of plugin name unless its SHA-256 is pin.SHA256, checked
// at every start. Every pin given for a plugin is checked, in the order given.
func (c *Catalog) Pin(name string, pin Pin) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pins == nil {
		c.pins = map[string][]Pin{}
	}
	c.pins[name] = append(c.pins[name], pin)
}

// Digest returns the path of plugin name's binary and its SHA-256, read now.
func (c *Catalog) Digest(name string) (path, digest string, err error) {
	p, ok := c.byName[name]
	if !ok || p.Path == "" {
		return "", "", fmt.Errorf("plugin %q has no binary", name)
	}
	digest, err = FileDigest(p.Path)
	if err != nil {
		return p.Path, "", fmt.Errorf("plugin %q: hashing its binary: %w", name, err)
	}
	return p.Path, digest, nil
}

// PinMismatch is the message, without the pin's place, for a binary at path whose SHA-256 is got
// instead of the one pinned: the same when a file is loaded and when the plugin is started.
func PinMismatch(name, path, got string, pin Pin) string {
	hint := "if the new binary is trusted, write its digest here"
	if pin.Lock {
		hint = `if the new binary is trusted, run "sluice plugins lock" on the connector files again`
	}
	return fmt.Sprintf("plugin %q: binary %s has sha256 %s, but %s is pinned; %s", name, path, got, pin.SHA256, hint)
}

// checkPins hashes the binary at path of plugin name when the plugin is pinned and returns a permanent
// error, "where: PinMismatch", when a pin does not match.
func (c *Catalog) checkPins(name, path string) error {
	c.mu.Lock()
	pins := c.pins[name]
	c.mu.Unlock()
	if len(pins) == 0 {
		return nil
	}
	got, err := FileDigest(path)
	if err != nil {
		return fmt.Errorf("plugin %q is pinned, and its binary cannot be hashed: %w", name, err)
	}
	for _, pin := range pins {
		if got != pin.SHA256 {
			return sdk.Permanent(fmt.Errorf("%s: %s", pin.Where, PinMismatch(name, path, got, pin)))
		}
	}
	return nil
}
