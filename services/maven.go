package services

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

var mavenMu sync.Mutex

// Classpath returns the Java classpath of the dependencies declared in the pom.xml in dir, resolving them
// with Maven (from Maven Central into ~/.m2, Maven's usual cache) the first time. The result is cached in
// dir/target/classpath.txt and recomputed when pom.xml is newer.
func Classpath(dir string) (string, error) {
	mavenMu.Lock()
	defer mavenMu.Unlock()
	pom := filepath.Join(dir, "pom.xml")
	out := filepath.Join(dir, "target", "classpath.txt")
	if pi, err := os.Stat(pom); err != nil {
		return "", err
	} else if oi, err := os.Stat(out); err == nil && oi.ModTime().After(pi.ModTime()) {
		if b, err := os.ReadFile(out); err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b)), nil
		}
	}
	mvn, err := LookPath("mvn", "install Maven (apt-get install maven) and Java 17")
	if err != nil {
		return "", err
	}
	args := []string{mvn, "-q", "-B", "-f", pom, "dependency:build-classpath", "-Dmdep.outputFile=" + out}
	cmd := exec.Command(args[0], args[1:]...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("resolving Java dependencies (%s): %w\n%s", quote(args), err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// Root returns the directory holding this package's sources (services/), where the Java launchers and
// their pom.xml files live: $SLUICE_SERVICES_DIR when set, else the directory this file was compiled from.
func Root() string {
	if d := os.Getenv("SLUICE_SERVICES_DIR"); d != "" {
		return d
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}
