//go:build unix

package plugin

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// distrust says why sluice will not run the executable found at path (resolved to real, symlinks
// followed), or returns "" when it may: the file must be owned by the user running sluice or by root and
// be writable by its owner only, and so must the directory it was found in and, for a symlink, the
// directory of the file it points to. Anyone else who can write to one of them could replace the plugin.
func distrust(path, real string) string {
	uid := os.Geteuid()
	info, err := os.Stat(real)
	if err != nil {
		return "cannot be checked: " + errText(err)
	}
	if r := unsafeMode(info, uid); r != "" {
		return "is " + r + "; anyone who can write it can replace the plugin"
	}
	dirs := []string{filepath.Dir(path)}
	if d := filepath.Dir(real); d != realPath(dirs[0]) {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		info, err := os.Stat(d)
		if err != nil {
			return fmt.Sprintf("is in directory %s, which cannot be checked: %s", d, errText(err))
		}
		if r := unsafeMode(info, uid); r != "" {
			return fmt.Sprintf("is in directory %s, which is %s; anyone who can write it can replace the plugin", d, r)
		}
	}
	return ""
}

// unsafeMode says what makes a file or directory others could change: an owner other than uid and root,
// or write permission for its group or everyone. It returns "" when there is none.
func unsafeMode(info fs.FileInfo, uid int) string {
	if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) != uid && st.Uid != 0 {
		return fmt.Sprintf("owned by uid %d, not by the user running sluice (uid %d) or root", st.Uid, uid)
	}
	mode := info.Mode().Perm()
	switch {
	case mode&0o002 != 0:
		return fmt.Sprintf("writable by everyone (mode %04o)", mode)
	case mode&0o020 != 0:
		return fmt.Sprintf("writable by its group (mode %04o)", mode)
	}
	return ""
}

// unsafeDir says what makes the directory at path one others could change (see unsafeMode), or why it
// cannot be checked; "" when it is safe.
func unsafeDir(path string) string {
	info, err := os.Lstat(path)
	switch {
	case err != nil:
		return "unusable: " + errText(err)
	case !info.IsDir():
		return "not a directory"
	}
	return unsafeMode(info, os.Geteuid())
}
