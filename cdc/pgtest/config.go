package pgtest

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// defaultSettings configure a cluster for logical replication tests: enough
// slots and senders for many tests at once, durability traded for speed.
var defaultSettings = map[string]string{
	"wal_level":             "logical",
	"max_replication_slots": "40",
	"max_wal_senders":       "40",
	"wal_sender_timeout":    "60s",
	"max_connections":       "500",
	"shared_buffers":        "128MB",
	"fsync":                 "off",
	"full_page_writes":      "off",
	"synchronous_commit":    "on",
	"logging_collector":     "off",
}

// managedSettings are the settings pgtest owns: DSN, Port and the watchdog
// depend on them.
var managedSettings = []string{"listen_addresses", "port", "unix_socket_directories"}

// confFile is the file, included from postgresql.conf, that holds pgtest's
// settings.
const confFile = "pgtest.conf"

// maxSocketPath is the longest Unix-domain socket path Linux accepts.
const maxSocketPath = 107

// settings merges extra over the default settings, rejecting the settings
// pgtest manages and names that could not be written to postgresql.conf.
func settings(extra map[string]string) (map[string]string, error) {
	merged := maps.Clone(defaultSettings)
	for name, value := range extra {
		if slices.Contains(managedSettings, name) {
			return nil, fmt.Errorf("setting %s is managed by pgtest: remove it from Options.Settings", name)
		}
		if !validSettingName(name) {
			return nil, fmt.Errorf("setting %q is not a parameter name", name)
		}
		merged[name] = value
	}
	return merged, nil
}

// validSettingName reports whether name looks like a PostgreSQL parameter
// name, including custom ones such as "auto_explain.log_min_duration".
func validSettingName(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// writeConf writes settings plus the managed ones for port to pgtest.conf, and
// on first use includes that file from postgresql.conf.
func (c *Cluster) writeConf(settings map[string]string, port int) error {
	socketDir := c.dir
	if len(filepath.Join(c.dir, ".s.PGSQL."+strconv.Itoa(port))) > maxSocketPath {
		socketDir = "" // No Unix socket; clients use TCP, as DSN does.
	}
	all := maps.Clone(settings)
	all["listen_addresses"] = "127.0.0.1"
	all["port"] = strconv.Itoa(port)
	all["unix_socket_directories"] = socketDir

	var b strings.Builder
	b.WriteString("# Written by pgtest; included from postgresql.conf.\n")
	for _, name := range slices.Sorted(maps.Keys(all)) {
		fmt.Fprintf(&b, "%s = '%s'\n", name, strings.ReplaceAll(all[name], "'", "''"))
	}
	path := filepath.Join(c.dir, confFile)
	_, err := os.Stat(path)
	first := os.IsNotExist(err)
	if err := c.writeFile(path, b.String()); err != nil {
		return err
	}
	if first {
		return appendFile(filepath.Join(c.dir, "postgresql.conf"), "\ninclude '"+confFile+"'\n")
	}
	return nil
}

// replicationRule lets replication connections from 127.0.0.1 in without a
// password. initdb --auth=trust writes it; older or patched versions may not.
var replicationRule = []string{"host", "replication", "all", "127.0.0.1/32", "trust"}

// allowReplication adds replicationRule to pg_hba.conf unless it is there.
func (c *Cluster) allowReplication() error {
	path := filepath.Join(c.dir, "pg_hba.conf")
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if slices.Equal(strings.Fields(sc.Text()), replicationRule) {
			return nil
		}
	}
	return appendFile(path, "\n"+strings.Join(replicationRule, " ")+"\n")
}

// writeFile writes data to path, readable only by the server's user.
func (c *Cluster) writeFile(path, data string) error {
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		return err
	}
	if c.cred != nil {
		return os.Chown(path, int(c.cred.Uid), int(c.cred.Gid))
	}
	return nil
}

// appendFile appends data to the existing file path, keeping its owner.
func appendFile(path, data string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
