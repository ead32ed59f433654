package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flow/report"
)

// natsNode is one server of a test's NATS cluster: a real nats-server
// process started from a configuration file like the one docs/cluster.md
// shows.
type natsNode struct {
	name string
	url  string
	conf string
	cmd  *exec.Cmd
}

// freeAddr is a loopback address nothing listens on (yet).
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// natsCluster starts n nats-server processes routed into one JetStream
// cluster on loopback, and waits until JetStream answers.
func natsCluster(t *testing.T, n int) ([]*natsNode, string) {
	t.Helper()
	bin := natsServerBinary(t)
	dir := t.TempDir()
	routes := make([]string, n)
	clients := make([]string, n)
	clusterAddrs := make([]string, n)
	for i := range n {
		clients[i], clusterAddrs[i] = freeAddr(t), freeAddr(t)
		routes[i] = "nats://" + clusterAddrs[i]
	}
	nodes := make([]*natsNode, n)
	for i := range n {
		nd := &natsNode{name: fmt.Sprintf("n%d", i+1), url: "nats://" + clients[i]}
		nd.conf = filepath.Join(dir, nd.name+".conf")
		// The configuration docs/cluster.md shows, on loopback and
		// without authentication.
		conf := fmt.Sprintf(`server_name: %s
listen: %s
jetstream { store_dir: "%s" }
cluster {
  name: flow
  listen: %s
  routes: [%s]
}
`, nd.name, clients[i], filepath.Join(dir, nd.name), clusterAddrs[i], strings.Join(routes, ", "))
		if err := os.WriteFile(nd.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		nd.cmd = exec.Command(bin, "-c", nd.conf)
		if err := nd.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		nodes[i] = nd
	}
	t.Cleanup(func() {
		for _, nd := range nodes {
			nd.cmd.Process.Kill()
			nd.cmd.Wait()
		}
	})
	urls := strings.Join(func() []string {
		var u []string
		for _, nd := range nodes {
			u = append(u, nd.url)
		}
		return u
	}(), ",")
	// JetStream answers once the cluster has elected its meta leader.
	nc, err := nats.Connect(urls, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			break
		}
		if i > 120 {
			t.Fatalf("the NATS cluster's JetStream did not come up: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return nodes, urls
}

// streamLeader names the server leading stream name.
func streamLeader(t testing.TB, urls, name string) (string, int) {
	t.Helper()
	leader, replicas, err := findLeader(urls, name)
	if err != nil {
		t.Fatal(err)
	}
	return leader, replicas
}

// findLeader asks the cluster for stream name's leader and replicas; the
// leader is "" during an election.
func findLeader(urls, name string) (string, int, error) {
	nc, err := nats.Connect(urls)
	if err != nil {
		return "", 0, err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		return "", 0, err
	}
	info := s.CachedInfo()
	if info.Cluster == nil {
		return "", info.Config.Replicas, nil
	}
	return info.Cluster.Leader, info.Config.Replicas, nil
}

// One node of a 3-node JetStream cluster (the leader of the work stream)
// is SIGKILLed mid-run: the streams have three replicas, the run and its
// worker processes reconnect to the other nodes, and every item comes
// out once.
func TestClusterThreeNodesOneKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server and runs three")
	}
	nodes, urls := natsCluster(t, 3)
	startProc(t, urls, "a", 4, false)
	startProc(t, urls, "b", 4, false)
	for _, s := range []string{workStream, resultsStream, "KV_" + runsBucket} {
		if _, r := streamLeader(t, urls, s); r != 3 {
			t.Fatalf("stream %s has %d replicas on a cluster of three, want 3", s, r)
		}
	}
	// The killer runs beside the test's goroutine, so it reports rather
	// than failing the test itself, and asks again while an election
	// leaves the stream without a leader.
	type kill struct {
		node string
		err  error
	}
	killed := make(chan kill, 1)
	go func() {
		time.Sleep(700 * time.Millisecond)
		var err error
		for try := 0; try < 50; try++ {
			var leader string
			if leader, _, err = findLeader(urls, workStream); err == nil {
				for _, nd := range nodes {
					if nd.name == leader {
						nd.cmd.Process.Kill()
						killed <- kill{node: leader}
						return
					}
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		killed <- kill{err: fmt.Errorf("no leader for the work stream after 50 tries (last error: %v)", err)}
	}()
	rep, out := runClusterOn(t, Conn{URL: urls}, slowPipeline, nil)
	k := <-killed
	if k.err != nil {
		t.Fatal(k.err)
	}
	t.Logf("killed %s, the work stream's leader, mid-run", k.node)
	if rep.Status != report.StatusSucceeded {
		jsState(t, urls)
		t.Fatalf("status %s: %s; calc %+v", rep.Status, rep.Reason, *rep.Stages[1])
	}
	got := sortedUnique(t, out)
	if len(got) != 24 || got[0] != 1 || got[23] != 24 {
		t.Fatalf("items out: %v", got)
	}
	if calc := rep.Stages[1]; calc.Succeeded != 24 || calc.In != 24 {
		t.Errorf("calc %+v", *calc)
	}
}

// jsState logs what JetStream holds, for a failure's diagnosis.
func jsState(t *testing.T, urls string) {
	nc, err := nats.Connect(urls)
	if err != nil {
		t.Logf("state: %v", err)
		return
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range []string{workStream, resultsStream} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Logf("stream %s: %v", name, err)
			continue
		}
		i := s.CachedInfo()
		t.Logf("stream %s: %d msgs, cluster %+v", name, i.State.Msgs, i.Cluster)
	}
	if c, err := js.Consumer(ctx, workStream, workConsumer); err != nil {
		t.Logf("consumer: %v", err)
	} else {
		i := c.CachedInfo()
		t.Logf("consumer: pending %d, ack pending %d, redelivered %d, waiting %d, cluster %+v", i.NumPending, i.NumAckPending, i.NumRedelivered, i.NumWaiting, i.Cluster)
	}
}

// The run's key in flow-runs lapses mid-run (as when JetStream elects a
// leader for longer than the run's TTL): workers drop its batches as a
// dead run's, and the run sends every item out again instead of waiting
// for answers that will never come. Every item comes out once.
func TestClusterRunKeyLapses(t *testing.T) {
	srv := startServer(t, "")
	startWorkers(t, srv, 2, 4)
	nc := dial(t, Conn{Embedded: srv})
	js, _ := jetstream.New(nc)
	stop := make(chan struct{})
	go func() {
		time.Sleep(500 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		kv, err := js.KeyValue(ctx, runsBucket)
		if err != nil {
			return
		}
		// Gone for four seconds, longer than a worker remembers a run
		// alive (2 s): the workers term what they take.
		for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			keys, _ := kv.Keys(ctx)
			for _, k := range keys {
				_ = kv.Delete(ctx, k)
			}
		}
		close(stop)
	}()
	rep, out := runCluster(t, srv, `version: 1
stages:
  - {name: src, source: {range: {from: 1, to: 120}}}
  - {name: calc, step: compute, mode: cluster, workers: 120, with: {value: "${ sleep(0.2) ?? item }"}}
`, nil)
	<-stop
	if rep.Status != report.StatusSucceeded {
		t.Fatalf("status %s: %s; calc %+v", rep.Status, rep.Reason, *rep.Stages[1])
	}
	got := sortedUnique(t, out)
	if len(got) != 120 || got[0] != 1 || got[119] != 120 {
		t.Fatalf("items out: %v", got)
	}
}
