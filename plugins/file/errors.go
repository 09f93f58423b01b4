package file

import (
	"errors"
	"fmt"
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
