//go:build !unix

package plugin

import "os"

// identity is what the spec cache compares to tell that a binary has not changed since it was probed:
// its size and modification time, where the system offers nothing more.
type identity struct {
	Size  int64 `json:"size"`
	Mtime int64 `json:"mtime_ns"`
}

// identify returns the identity of the file at path (symlinks followed).
func identify(path string) (identity, error) {
	info, err := os.Stat(path)
	if err != nil {
		return identity{}, err
	}
	return identity{Size: info.Size(), Mtime: info.ModTime().UnixNano()}, nil
}

// changed is the file's modification time, in nanoseconds.
func (id identity) changed() int64 { return id.Mtime }
