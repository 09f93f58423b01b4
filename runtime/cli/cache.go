package cli

import (
	"log/slog"
	"os"
	"path/filepath"
)

// specCacheDir is where plugin specs are cached: sluice/plugin-specs in the user's cache directory
// ($XDG_CACHE_HOME, else ~/.cache, on Linux), or "" (no cache) when there is none.
func specCacheDir(log *slog.Logger) string {
	dir, err := os.UserCacheDir()
	if err != nil {
		log.Debug("not caching plugin specs: no user cache directory", "error", err)
		return ""
	}
	return filepath.Join(dir, "sluice", "plugin-specs")
}
