package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Conn says how to reach NATS: a URL with its credentials, or an embedded
// server of this process.
type Conn struct {
	URL      string // nats://host:4222 (several, comma-separated, for a cluster)
	Creds    string // a .creds file (JWT and nkey)
	NKeySeed string // a file holding an nkey seed
	User     string
	Password string
	Token    string
	CAFile   string // TLS: the CA that signed the server's certificate
	CertFile string // TLS: a client certificate (mutual TLS)
	KeyFile  string
	Name     string // the connection's name, seen in the server's monitoring

	// Embedded, when set, is a server of this process: no URL needed.
	Embedded *server.Server
}

// Dial connects. It reconnects by itself for as long as the run lasts.
func (c Conn) Dial() (*nats.Conn, error) {
	opts := []nats.Option{nats.Name(c.Name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}
	if c.Embedded != nil {
		opts = append(opts, nats.InProcessServer(c.Embedded))
		return nats.Connect("", opts...)
	}
	if c.URL == "" {
		return nil, errors.New("no NATS URL: give --nats nats://host:4222")
	}
	if c.Creds != "" {
		opts = append(opts, nats.UserCredentials(c.Creds))
	}
	if c.NKeySeed != "" {
		o, err := nats.NkeyOptionFromSeed(c.NKeySeed)
		if err != nil {
			return nil, fmt.Errorf("--nkey %s: %w", c.NKeySeed, err)
		}
		opts = append(opts, o)
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.Token != "" {
		opts = append(opts, nats.Token(c.Token))
	}
	if c.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.CAFile))
	}
	if c.CertFile != "" {
		opts = append(opts, nats.ClientCert(c.CertFile, c.KeyFile))
	}
	nc, err := nats.Connect(c.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", c.URL, err)
	}
	return nc, nil
}

// Private reports whether what travels on nc cannot be read on the way:
// an in-process connection, loopback, or TLS. Secrets go nowhere else.
func Private(nc *nats.Conn) bool {
	if nc.TLSRequired() {
		return true
	}
	if _, err := nc.TLSConnectionState(); err == nil {
		return true
	}
	u, err := url.Parse(nc.ConnectedUrl())
	if err != nil || u.Host == "" {
		// The in-process connection has no URL.
		return nc.ConnectedUrl() == "" || strings.HasPrefix(nc.ConnectedUrl(), "pipe")
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
