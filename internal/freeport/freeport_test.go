package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestPortIsBelowTheEphemeralRange(t *testing.T) {
	high := ephemeralLow()
	if high-lowest < minSpan {
		t.Skipf("ephemeral range starts at %d: no room below it on this machine", high)
	}
	for range 50 {
		port, err := Port()
		if err != nil {
			t.Fatal(err)
		}
		if port < lowest || port >= high {
			t.Fatalf("Port() = %d, want one in [%d, %d)", port, lowest, high)
		}
		// The port is free: a server can listen on it.
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("listen on the port Port returned: %v", err)
		}
		ln.Close()
	}
}

func TestTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if !Taken(port) {
		t.Errorf("Taken(%d) = false while a listener holds it", port)
	}
	ln.Close()
	if Taken(port) {
		t.Errorf("Taken(%d) = true after its listener closed", port)
	}
}

func TestPortsAreDistinct(t *testing.T) {
	ports, err := Ports(20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Fatalf("Ports(20) = %v: %d twice", ports, p)
		}
		seen[p] = true
	}
	if len(ports) != 20 {
		t.Fatalf("Ports(20) returned %d ports", len(ports))
	}
}
