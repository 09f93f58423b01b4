//go:build unix

package plugin

import "golang.org/x/sys/unix"

// identity is what the spec cache compares to tell that a binary has not changed since it was probed:
// replacing the file changes its inode, writing it changes its size or its modification and change
// times, and the change time cannot be set back.
type identity struct {
	Dev   uint64 `json:"dev"`
	Ino   uint64 `json:"ino"`
	Size  int64  `json:"size"`
	Mtime int64  `json:"mtime_ns"`
	Ctime int64  `json:"ctime_ns"`
}

// identify returns the identity of the file at path (symlinks followed).
func identify(path string) (identity, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return identity{}, err
	}
	return identity{
		Dev: uint64(st.Dev), Ino: uint64(st.Ino), Size: st.Size,
		Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(),
	}, nil
}

// changed is the later of the file's modification and change times, in nanoseconds.
func (id identity) changed() int64 { return max(id.Mtime, id.Ctime) }
