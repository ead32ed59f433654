package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/flowrun/flow/cluster"
	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/spec"
)

// natsFlags say how to reach NATS; `flow run`, `flow worker` and `flow
// workers` share them.
type natsFlags struct {
	conn     cluster.Conn
	ackWait  time.Duration
	replicas int
}

// settings are the cluster settings the flags give.
func (f *natsFlags) settings() cluster.Settings {
	return cluster.Settings{AckWait: f.ackWait, Replicas: f.replicas}
}

func addNATSFlags(fl *pflag.FlagSet, f *natsFlags) {
	fl.StringVar(&f.conn.URL, "nats", "", "NATS server(s) for mode: cluster stages, e.g. `nats://host:4222` (tls://host:4222 for TLS)")
	fl.StringVar(&f.conn.Creds, "nats-creds", "", "NATS credentials `FILE` (JWT and nkey seed)")
	fl.StringVar(&f.conn.NKeySeed, "nats-nkey", "", "`FILE` holding an nkey seed to authenticate with")
	fl.StringVar(&f.conn.User, "nats-user", "", "NATS user name (the password comes from FLOW_NATS_PASSWORD)")
	fl.StringVar(&f.conn.CAFile, "nats-ca", "", "CA certificate `FILE` that signed the NATS server's (TLS)")
	fl.StringVar(&f.conn.CertFile, "nats-cert", "", "client certificate `FILE` for mutual TLS")
	fl.StringVar(&f.conn.KeyFile, "nats-key", "", "client key `FILE` for mutual TLS")
	fl.IntVar(&f.replicas, "nats-replicas", 0, "copies JetStream keeps of the streams and buckets flow creates (0: 3 on a cluster of three or more servers, else 1; streams that exist keep theirs)")
	fl.DurationVar(&f.ackWait, "ack-wait", 30*time.Second, "how long a batch a worker took may go without a sign of life before another worker gets it (set by the first run or worker to create the work consumer)")
}

// fill reads the secrets of the connection from the environment, never
// from flags (which show in ps).
func (f *natsFlags) fill(environ []string) {
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "FLOW_NATS_PASSWORD":
			f.conn.Password = v
		case "FLOW_NATS_TOKEN":
			f.conn.Token = v
		}
	}
}

// clusterFlags are the cluster flags of `flow run`.
type clusterFlags struct {
	nats       natsFlags
	serve      string
	localSlots int
	xfer       transferFlags
}

// transferFlags bound what transfer: true stages ship per item, on the
// run's side and on a worker's alike.
type transferFlags struct{ maxFile, maxItem byteSizeFlag }

func addTransferFlags(fl *pflag.FlagSet, f *transferFlags) {
	f.maxFile, f.maxItem = 1<<30, 4<<30
	fl.Var(&f.maxFile, "transfer-max-file", "largest `SIZE` of one file a transfer: true stage ships to or from a worker (e.g. 512MiB)")
	fl.Var(&f.maxItem, "transfer-max-item", "largest `SIZE` of all the files of one item a transfer: true stage ships, each way")
}

// byteSizeFlag is a size written as in pipelines: "512MiB", "1GB", "65536".
type byteSizeFlag int64

func (b *byteSizeFlag) String() string {
	switch v := int64(*b); {
	case v >= 1<<30 && v%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", v>>30)
	case v >= 1<<20 && v%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", v>>20)
	default:
		return fmt.Sprint(v)
	}
}

func (b *byteSizeFlag) Set(s string) error {
	v, err := spec.ParseByteSize(s)
	if err != nil {
		return err
	}
	if v <= 0 {
		return fmt.Errorf("%q: a size must be more than 0", s)
	}
	*b = byteSizeFlag(v)
	return nil
}

func (b *byteSizeFlag) Type() string { return "size" }

func addClusterFlags(cmd *cobra.Command, f *clusterFlags) {
	fl := cmd.Flags()
	addNATSFlags(fl, &f.nats)
	fl.StringVar(&f.serve, "serve", "", "with mode: cluster stages and no --nats: let workers on other machines connect to this run's embedded NATS server at `host:port` (they present FLOW_SERVE_TOKEN; required beyond loopback)")
	addTransferFlags(fl, &f.xfer)
	fl.IntVar(&f.localSlots, "local-slots", -1, "items this run runs itself for its mode: cluster stages, in-process (default: one per CPU without --nats, none with it)")
}

// clusterRunners adds the runner of mode: cluster to runners when the
// pipeline has such stages (or --nats/--serve ask for a cluster): through
// --nats, or on an embedded server with in-process workers, so that a
// pipeline written for a cluster runs on a laptop as it is.
func (a *app) clusterRunners(p *spec.Pipeline, f clusterFlags, run cluster.RunOptions, stderr io.Writer) (engine.Runners, func(), error) {
	uses := false
	for _, s := range p.Stages {
		uses = uses || s.Mode == spec.ModeCluster
	}
	if !uses {
		if f.nats.conn.URL != "" || f.serve != "" {
			fmt.Fprintf(stderr, "flow: %s has no mode: cluster stage; --nats and --serve change nothing\n", p.File)
		}
		return runners, func() {}, nil
	}
	f.nats.fill(a.environ)
	var stops []func()
	closeAll := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	conn := f.nats.conn
	conn.Name = "flow run " + p.File
	local := f.localSlots
	var localLabels []string
	if conn.URL == "" {
		if f.serve == "" {
			// The run's own workers are the whole cluster: they offer
			// every label, so that a stage with labels: runs on a laptop.
			// With --serve, labelled work waits for the workers that join.
			localLabels = []string{"*"}
		}
		token := ""
		for _, kv := range a.environ {
			if v, ok := strings.CutPrefix(kv, "FLOW_SERVE_TOKEN="); ok {
				token = v
			}
		}
		srv, stop, err := cluster.Embedded{Listen: f.serve, Token: token}.Start()
		if err != nil {
			return nil, nil, &exitError{code: ExitInvalid, msg: err.Error()}
		}
		stops = append(stops, stop)
		conn.Embedded = srv
		if local < 0 {
			local = runtime.NumCPU()
		}
		if f.serve != "" {
			fmt.Fprintf(stderr, "flow: workers can join this run with: flow worker --nats %s\n", srv.ClientURL())
		}
	} else if local < 0 {
		local = 0
	}
	nc, err := conn.Dial()
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	stops = append(stops, nc.Close)
	settings := f.nats.settings()
	settings.TransferMaxFile, settings.TransferMaxItem = int64(f.xfer.maxFile), int64(f.xfer.maxItem)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := cluster.NewClientFor(ctx, nc, settings, run)
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("setting up the cluster on NATS: %w", err)
	}
	stops = append(stops, func() { client.Close() })
	if local > 0 {
		wnc, err := conn.Dial()
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		w, err := cluster.NewWorker(ctx, wnc, cluster.WorkerConfig{Name: "local", Slots: local, Labels: localLabels, Registry: a.reg, Settings: settings, Log: stderr})
		if err != nil {
			wnc.Close()
			closeAll()
			return nil, nil, err
		}
		wctx, wcancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); w.Serve(wctx) }()
		// Stopped before the client closes, so that nothing of this run is
		// still being worked on when its key goes.
		stops = append(stops, func() { wcancel(); wg.Wait(); wnc.Close() })
	}
	rs := engine.Runners{}
	for m, f := range runners {
		rs[m] = f
	}
	rs[spec.ModeCluster] = client.Factory
	return rs, closeAll, nil
}

func (a *app) workerCmd() *cobra.Command {
	var (
		nf     natsFlags
		xf     transferFlags
		slots  int
		labels []string
		name   string
	)
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Serve the mode: cluster stages of any run, from NATS",
		Long: `Worker connects to NATS JetStream and runs the items of mode: cluster stages
that any 'flow run --nats' sends there, --slots at a time, until SIGINT or
SIGTERM (then what it was running goes back to the stream for another
worker). It builds each stage from the pipeline text the run validated, so
the workers need no copy of the pipeline files; files the steps read must be
at the same paths on the worker (a shared folder), or the stage says
transfer: true (they travel through the Object Store, bounded by
--transfer-max-file and --transfer-max-item). --label makes this worker take
the items of stages with labels: it has every one of, beside unlabelled ones.

A worker that dies loses nothing: the batches it held come back to another
worker once --ack-wait passes without a sign of life from it.

Secrets: a run with secret variables sends them only over TLS or loopback.
Workers never print items or variables.`,
		Example: `  flow worker --nats nats://queue.internal:4222 --slots 8
  FLOW_NATS_TOKEN=... flow worker --nats tls://queue.internal:4222 --nats-ca ca.pem
  flow worker --nats nats://127.0.0.1:4222 --label gpu --name gpu-1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, l := range labels {
				if !spec.ValidLabel(l) {
					return &exitError{code: ExitInvalid, msg: fmt.Sprintf("--label %q: a label is 1 to 64 letters, digits, '-' or '_', starting with a letter or digit", l)}
				}
			}
			nf.fill(a.environ)
			nf.conn.Name = "flow worker " + name
			nc, err := nf.conn.Dial()
			if err != nil {
				return &exitError{code: ExitFailed, msg: err.Error()}
			}
			defer nc.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sigs)
			go func() {
				<-sigs
				fmt.Fprintln(a.stderr, "flow worker: stopping; what runs here goes back to the stream")
				cancel()
				<-sigs
				os.Exit(130)
			}()
			ws := nf.settings()
			ws.TransferMaxFile, ws.TransferMaxItem = int64(xf.maxFile), int64(xf.maxItem)
			w, err := cluster.NewWorker(ctx, nc, cluster.WorkerConfig{Name: name, Slots: slots, Labels: labels,
				Registry: a.reg, Settings: ws, Log: a.stderr})
			if err != nil {
				return &exitError{code: ExitFailed, msg: err.Error()}
			}
			if !a.quiet {
				fmt.Fprintf(a.stderr, "flow worker: serving with %d slots on %s\n", slots, nc.ConnectedUrl())
			}
			if err := w.Serve(ctx); err != nil {
				return &exitError{code: ExitFailed, msg: err.Error()}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	addNATSFlags(fl, &nf)
	addTransferFlags(fl, &xf)
	fl.IntVar(&slots, "slots", runtime.NumCPU(), "items run at once")
	fl.StringArrayVar(&labels, "label", nil, "a `LABEL` this worker offers (repeatable): it also runs the items of stages with labels: it has every one of, shown by flow workers")
	fl.StringVar(&name, "name", "", "this worker's name in attempts and flow workers (default host:pid)")
	return cmd
}

func (a *app) workersCmd() *cobra.Command {
	var (
		nf     natsFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:     "workers",
		Short:   "List the flow workers connected to NATS",
		Example: "  flow workers --nats nats://queue.internal:4222\n  flow workers --nats nats://127.0.0.1:4222 --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			nf.fill(a.environ)
			nc, err := nf.conn.Dial()
			if err != nil {
				return &exitError{code: ExitFailed, msg: err.Error()}
			}
			defer nc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ws, err := cluster.Workers(ctx, nc)
			if err != nil {
				return &exitError{code: ExitFailed, msg: err.Error()}
			}
			sort.Slice(ws, func(i, j int) bool { return ws[i].Name < ws[j].Name })
			if asJSON {
				if ws == nil {
					ws = []cluster.Info{}
				}
				b, _ := json.MarshalIndent(ws, "", "  ")
				fmt.Fprintln(a.stdout, string(b))
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tLABELS\tSLOTS\tBUSY\tDONE\tSEEN")
			for _, w := range ws {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s ago\n", w.Name, strings.Join(w.Labels, ","), w.Slots, w.Busy, w.Done, time.Since(w.Seen).Round(time.Second))
			}
			tw.Flush()
			if len(ws) == 0 {
				fmt.Fprintln(a.stderr, "flow: no worker seen in the last 15 seconds; start one with flow worker --nats URL")
			}
			return nil
		},
	}
	addNATSFlags(cmd.Flags(), &nf)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
