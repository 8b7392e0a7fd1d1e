package pgtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// EnvBinDir names the environment variable that points at the directory
// holding the PostgreSQL server binaries (initdb, pg_ctl, postgres). It wins
// over every other place pgtest looks.
const EnvBinDir = "OUTBOX_RELAY_PG_BINDIR"

// debianBinDirs matches the binary directories of Debian's PostgreSQL
// packages, one per installed major version.
const debianBinDirs = "/usr/lib/postgresql/*/bin"

// findBinDir returns the directory holding initdb: $OUTBOX_RELAY_PG_BINDIR,
// else the newest Debian package's, else pg_config --bindir, else initdb's
// directory on PATH.
func findBinDir() (string, error) {
	if dir := os.Getenv(EnvBinDir); dir != "" {
		if !hasInitdb(dir) {
			return "", fmt.Errorf("%s=%s holds no initdb: point it at the directory with initdb, pg_ctl and postgres", EnvBinDir, dir)
		}
		return dir, nil
	}
	if dir := newestDebianBinDir(); dir != "" {
		return dir, nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); hasInitdb(dir) {
			return dir, nil
		}
	}
	if path, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(path), nil
	}
	return "", fmt.Errorf("no PostgreSQL server binaries in %s, pg_config --bindir or PATH: install PostgreSQL or set %s to the directory with initdb, pg_ctl and postgres", debianBinDirs, EnvBinDir)
}

// hasInitdb reports whether dir holds an initdb executable.
func hasInitdb(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, "initdb"))
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// newestDebianBinDir returns the binary directory of the highest installed
// Debian PostgreSQL version that has initdb, or "" if there is none.
func newestDebianBinDir() string {
	dirs, _ := filepath.Glob(debianBinDirs)
	type candidate struct {
		dir     string
		version []int
	}
	var found []candidate
	for _, dir := range dirs {
		version, ok := parseVersion(filepath.Base(filepath.Dir(dir)))
		if ok && hasInitdb(dir) {
			found = append(found, candidate{dir, version})
		}
	}
	if len(found) == 0 {
		return ""
	}
	return slices.MaxFunc(found, func(a, b candidate) int {
		return slices.Compare(a.version, b.version)
	}).dir
}

// parseVersion parses a version directory name such as "15" or "9.6".
func parseVersion(s string) ([]int, bool) {
	var version []int
	for part := range strings.SplitSeq(s, ".") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return nil, false
		}
		version = append(version, n)
	}
	return version, true
}
