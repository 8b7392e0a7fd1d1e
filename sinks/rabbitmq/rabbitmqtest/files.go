package rabbitmqtest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/outbox-relay/outbox-relay/internal/testpki"
)

// writeFiles writes the node's configuration, plugin list and Erlang
// cookie into s.dir, and sets s.env. ports are the AMQP, distribution and
// epmd ports, then the TLS one.
func (s *Server) writeFiles(ports []int, opts Options, tf *tlsFiles) error {
	home := filepath.Join(s.dir, "home")
	for _, d := range []string{home, filepath.Join(s.dir, "mnesia"), filepath.Join(s.dir, "log")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	var cookie [16]byte
	_, _ = rand.Read(cookie[:])
	if err := os.WriteFile(filepath.Join(home, ".erlang.cookie"), []byte(strings.ToUpper(hex.EncodeToString(cookie[:]))), 0o400); err != nil {
		return err
	}

	// The classic Erlang-term format: the new-style rabbitmq.conf would
	// cost a second of translation at each start.
	var rabbit []string
	rabbit = append(rabbit,
		fmt.Sprintf(`{tcp_listeners, [{"127.0.0.1", %d}]}`, ports[0]),
		`{loopback_users, [<<"guest">>]}`,
		`{log, [{file, [{level, info}]}, {console, [{enabled, false}]}]}`)
	if tf != nil {
		rabbit = append(rabbit,
			fmt.Sprintf(`{ssl_listeners, [{"127.0.0.1", %d}]}`, ports[3]),
			fmt.Sprintf(`{ssl_options, [{cacertfile, %q}, {certfile, %q}, {keyfile, %q}, {verify, verify_none}, {fail_if_no_peer_cert, false}]}`,
				tf.ca, tf.cert, tf.key))
	}
	conf := "[\n {rabbit, [\n   " + strings.Join(rabbit, ",\n   ") + "\n ]},\n" +
		" {kernel, [{inet_dist_use_interface, {127,0,0,1}}]}\n].\n"
	if err := os.WriteFile(filepath.Join(s.dir, "rabbitmq.config"), []byte(conf), 0o600); err != nil {
		return err
	}
	plugins := "[" + strings.Join(opts.Plugins, ",") + "].\n"
	if err := os.WriteFile(filepath.Join(s.dir, "enabled_plugins"), []byte(plugins), 0o600); err != nil {
		return err
	}

	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	s.env = []string{
		"PATH=" + path,
		"HOME=" + home,
		"LANG=C.UTF-8",
		"LC_ALL=C.UTF-8",
		// The script then runs the VM in its own process (exec), which
		// thus gets the signals and the parent death signal, instead of
		// forking it behind a shell that traps them.
		"detached=true",
		// No file of /etc/rabbitmq is read.
		"RABBITMQ_CONF_ENV_FILE=" + filepath.Join(s.dir, "rabbitmq-env.conf"),
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(s.dir, "rabbitmq.config"),
		"RABBITMQ_ADVANCED_CONFIG_FILE=" + filepath.Join(s.dir, "advanced.config"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(s.dir, "enabled_plugins"),
		"RABBITMQ_PLUGINS_EXPAND_DIR=" + filepath.Join(s.dir, "plugins-expand"),
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(s.dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(s.dir, "log"),
		"RABBITMQ_PID_FILE=" + filepath.Join(s.dir, "node.pid"),
		"RABBITMQ_NODENAME=" + s.Node,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT=" + strconv.Itoa(ports[0]),
		"RABBITMQ_DIST_PORT=" + strconv.Itoa(ports[1]),
		"ERL_EPMD_PORT=" + strconv.Itoa(ports[2]),
		"ERL_EPMD_ADDRESS=127.0.0.1",
		// Bound schedulers suit a machine of its own, not one shared
		// with other tests.
		"RABBITMQ_SCHEDULER_BIND_TYPE=u",
	}
	return nil
}

// tlsFiles are the PEM files of a TLS listener.
type tlsFiles struct {
	ca, cert, key string
}

// writeCertificates writes a CA and a certificate it signed for 127.0.0.1
// and localhost, valid for a day, into dir.
func writeCertificates(dir string) (*tlsFiles, error) {
	pki, err := testpki.Write(dir)
	if err != nil {
		return nil, fmt.Errorf("write certificates: %w", err)
	}
	return &tlsFiles{
		ca:   pki.Path(testpki.CAFile),
		cert: pki.Path(testpki.ServerCertFile),
		key:  pki.Path(testpki.ServerKeyFile),
	}, nil
}
