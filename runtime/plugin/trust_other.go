//go:build !unix

package plugin

// distrust returns "": where files have no Unix owner and mode bits, discovery does not check them.
func distrust(path, real string) string { return "" }

// unsafeDir returns "": see distrust.
func unsafeDir(path string) string { return "" }
