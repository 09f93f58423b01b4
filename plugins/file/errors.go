package file

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/sluicehq/sluice/sdk"
)

// fsErr wraps a filesystem error for the host, marking it permanent when retrying cannot help: no
// permission, a read-only filesystem, a path component that is not a directory, a directory where a file
// should be, a name too long. A full disk or an I/O error stays transient: it may heal.
func fsErr(err error) error {
	err = fmt.Errorf("file: %w", err)
	for _, errno := range []syscall.Errno{syscall.EACCES, syscall.EPERM, syscall.EROFS, syscall.ENOTDIR, syscall.EISDIR, syscall.ENAMETOOLONG} {
		if errors.Is(err, errno) {
			return sdk.Permanent(err)
		}
	}
	return err
}

// checkPath refuses, as invalid settings, a path no file can have: an empty one, or one holding a NUL
// byte (the system would refuse every open of it, and retrying cannot help).
func checkPath(path string) error {
	switch {
	case path == "":
		return sdk.InvalidSettings(errors.New("file: path is required"))
	case strings.ContainsRune(path, 0):
		return sdk.InvalidSettings(fmt.Errorf("file: path %q holds a NUL byte, which no file name can", path))
	}
	return nil
}
