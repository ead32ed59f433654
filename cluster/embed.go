package cluster

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Embedded is a NATS server with JetStream inside this process: the
// default for a run with cluster stages and no --nats, and what --serve
// opens to workers on other machines.
type Embedded struct {
	// Listen is host:port to accept workers on; "" listens nowhere (the
	// run's own in-process workers only).
	Listen string
	// Token, User and Password are what remote workers must give. Listening
	// beyond loopback without one of them is refused.
	Token, User, Password string
	// StoreDir holds JetStream's files; "" uses a temporary directory,
	// removed at Shutdown.
	StoreDir string
}

// Start starts the server and waits until it takes connections.
func (e Embedded) Start() (*server.Server, func(), error) {
	opts := &server.Options{JetStream: true, NoSigs: true, NoLog: true, DontListen: e.Listen == "",
		ServerName: "flow-" + randHex(4), Host: "127.0.0.1", Port: -1}
	if e.Listen != "" {
		host, port, err := net.SplitHostPort(e.Listen)
		if err != nil {
			return nil, nil, fmt.Errorf("--serve %s: want host:port or :port", e.Listen)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			return nil, nil, fmt.Errorf("--serve %s: the port must be a number from 0 to 65535", e.Listen)
		}
		if host == "" {
			host = "0.0.0.0"
		}
		if !loopbackHost(host) && e.Token == "" && e.User == "" {
			return nil, nil, errors.New("--serve listens beyond loopback: give workers a secret to present (--serve-token, or FLOW_SERVE_TOKEN), so that nobody else can take or forge work")
		}
		if p == 0 {
			// nats-server reads port 0 as its default, 4222; ":0" means
			// any free port, as everywhere else.
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
		opts.Authorization, opts.Username, opts.Password = e.Token, e.User, e.Password
	}
	dir, cleanup := e.StoreDir, func() {}
	if dir == "" {
		d, err := os.MkdirTemp("", "flow-nats-")
		if err != nil {
			return nil, nil, err
		}
		dir, cleanup = d, func() { os.RemoveAll(d) }
	}
	opts.StoreDir = dir
	srv, err := server.NewServer(opts)
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("starting the embedded NATS server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		cleanup()
		return nil, nil, errors.New("the embedded NATS server did not start within 10s")
	}
	return srv, func() { srv.Shutdown(); srv.WaitForShutdown(); cleanup() }, nil
}

func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
