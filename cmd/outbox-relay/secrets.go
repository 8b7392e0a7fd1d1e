package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
)

// readSecrets fills the DSN and the brokers' secrets from the files named
// by --pg-dsn-file and the brokers' --*-file flags, as mounted from a
// Kubernetes Secret. Setting a secret and its file is an error, even when
// one comes from the environment. Under --sink, only its broker's files
// are read: the others' flags have no effect (see sinkFlagsUnused).
func (c *Config) readSecrets() error {
	for _, s := range []struct {
		flag  string
		value *string
		file  string
	}{
		{"pg-dsn", &c.CDC.DSN, c.dsnFile},
		{"kafka-sasl-password", &c.Kafka.SASL.Password, c.saslPasswordFile},
		{"kafka-sasl-token", &c.Kafka.SASL.Token, c.saslTokenFile},
		{"nats-password", &c.NATS.Auth.Password, c.natsPasswordFile},
		{"nats-token", &c.NATS.Auth.Token, c.natsTokenFile},
		{"nats-creds", &c.NATS.Auth.Credentials, c.natsCredsFile},
		{"redis-password", &c.Redis.Password, c.redisPasswordFile},
		{"rabbitmq-password", &c.RabbitMQ.Password, c.rabbitmqPasswordFile},
	} {
		if sink := flagSink(s.flag); sink != "" && sink != c.Sink && slices.Contains(sinkNames, c.Sink) {
			continue
		}
		if err := readSecret(s.flag, s.value, s.file); err != nil {
			return err
		}
	}
	return nil
}

// readSecret sets *value to the content of file, without its trailing
// newlines, when file is not empty. name is the flag of the value; the
// file's flag is name-file. Its errors name the flags and the file, never
// the content.
func readSecret(name string, value *string, file string) error {
	if file == "" {
		return nil
	}
	if *value != "" {
		return fmt.Errorf("--%s (%s) and --%s-file (%s) are both set; set only one",
			name, envName(name), name, envName(name+"-file"))
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("--%s-file: %w", name, err) // *PathError names the file
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return fmt.Errorf("--%s-file: %s is empty; write the secret into it", name, file)
	}
	*value = s
	return nil
}

// envName returns the environment variable of the flag name.
func envName(name string) string {
	return envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}
