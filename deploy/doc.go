// Package deploy holds the deployment files of outbox-relay (Dockerfile,
// Compose, Kubernetes, dashboard, alerts) and, in its tests, checks of them
// that need no Docker engine, compose plugin or cluster. It is a module of
// its own so that applications importing the relay's packages do not pull
// the Kubernetes API types the checks decode the manifests into.
package deploy
