package foundation

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"netman/lib/apiwire"
)

const etcdURL = "http://" + EtcdIP + ":2379"

// flannelConfig is the network flanneld leases subnets from: the vxlan backend with GBP,
// so the low 16 bits of a packet's mark travel to the destination cell.
func flannelConfig() map[string]any {
	return map[string]any{
		"Network":   OverlayCIDR,
		"SubnetLen": OverlaySubnet,
		"Backend":   map[string]any{"Type": "vxlan", "VNI": VNI, "GBP": true},
	}
}

// EtcdPrefix is the key prefix of this foundation's flannel network.
func (f *Foundation) EtcdPrefix() string { return "/" + f.Prefix + "/network" }

func (f *Foundation) startEtcd(ctx context.Context) error {
	dir := filepath.Join(f.Dir, "etcd")
	p, err := startIn(f.Underlay, "etcd", f.log("etcd"), filepath.Join(f.opts.OverlayBin, "etcd"),
		"--name", f.Prefix, "--data-dir", dir,
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", f.Prefix+"=http://127.0.0.1:2380", "--log-level", "warn")
	if err != nil {
		return err
	}
	f.etcd = p
	f.onClose(p.stop)
	cfg, _ := json.Marshal(flannelConfig())
	err = p.waitReady(ctx, 30*time.Second, func(ctx context.Context) error {
		return f.etcdCall(ctx, "/v3/kv/put", map[string]string{
			"key": b64(f.EtcdPrefix() + "/config"), "value": base64.StdEncoding.EncodeToString(cfg),
		}, nil)
	})
	if err != nil {
		return fmt.Errorf("writing flannel's network config to etcd: %w", err)
	}
	return nil
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// etcdCall posts to etcd's JSON gateway from inside the underlay.
func (f *Foundation) etcdCall(ctx context.Context, path string, body, out any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, etcdURL+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	resp, err := f.clientIn(f.Underlay).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd %s: %s: %s", path, resp.Status, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// Leases are the subnets flanneld leased in etcd, by key, with their values (the
// cell's public IP and VTEP MAC).
func (f *Foundation) Leases(ctx context.Context) (map[string]string, error) {
	prefix := f.EtcdPrefix() + "/subnets/"
	// range_end of a prefix: the prefix with its last byte incremented.
	end := []byte(prefix)
	end[len(end)-1]++
	var out struct {
		Kvs []struct{ Key, Value string } `json:"kvs"`
	}
	if err := f.etcdCall(ctx, "/v3/kv/range", map[string]string{"key": b64(prefix), "range_end": base64.StdEncoding.EncodeToString(end)}, &out); err != nil {
		return nil, err
	}
	leases := map[string]string{}
	for _, kv := range out.Kvs {
		k, _ := base64.StdEncoding.DecodeString(kv.Key)
		v, _ := base64.StdEncoding.DecodeString(kv.Value)
		leases[string(k)] = string(v)
	}
	return leases, nil
}

// clientIn is an HTTP client whose connections start in the named namespace.
func (f *Foundation) clientIn(name string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return DialIn(ctx, name, network, addr)
		},
	}}
}

// PolicyServer is one replica.
type PolicyServer struct {
	NS string
	IP string
	// API is its external API, forwarded to the host's loopback.
	API string

	f      *Foundation
	config string
	mu     sync.Mutex
	proc   *process
}

// Internal-API and other ports inside each replica's namespace.
const (
	ExternalPort = 4002
	InternalPort = 4003
	healthPort   = 4010
	debugPort    = 4011
)

func (f *Foundation) startPolicyServer(ctx context.Context, i int) (*PolicyServer, error) {
	s := &PolicyServer{NS: fmt.Sprintf("%s-ps%d", f.Prefix, i), IP: fmt.Sprintf("10.250.0.%d", 1+i)}
	if err := f.addNS(ctx, s.NS); err != nil {
		return nil, err
	}
	if err := f.attach(ctx, s.NS, fmt.Sprintf("ps%d", i), s.IP); err != nil {
		return nil, err
	}
	// Postgres is on the host: its port is forwarded into the replica's namespace, so the
	// connection string stays the same.
	pg, err := f.pgHostPort()
	if err != nil {
		return nil, err
	}
	_, pgPort, _ := net.SplitHostPort(pg)
	dbFwd, err := forward(s.NS, "127.0.0.1:"+pgPort, "", pg)
	if err != nil {
		return nil, err
	}
	f.onClose(func() error { dbFwd.close(); return nil })
	dsn := f.adminURL
	if u, err := urlWithHost(dsn, "127.0.0.1:"+pgPort); err == nil {
		dsn = u
	}
	cfgPath := filepath.Join(f.Dir, s.NS+".json")
	cfg := map[string]any{
		"listen_host": "0.0.0.0", "listen_port": ExternalPort, "internal_listen_port": InternalPort,
		"health_check_port": healthPort, "debug_server_port": debugPort,
		"ca_cert_file":     filepath.Join(f.certs, "ca.crt"),
		"server_cert_file": filepath.Join(f.certs, "server.crt"),
		"server_key_file":  filepath.Join(f.certs, "server.key"),
		"uaa_key_file":     filepath.Join(f.Dir, "uaa.pub"),
		"database":         map[string]any{"type": "postgres", "connection_string": dsn},
		"tag_length":       2,
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		return nil, err
	}
	s.f, s.config = f, cfgPath
	ext, err := forward("", "127.0.0.1:0", s.NS, "127.0.0.1:"+strconv.Itoa(ExternalPort))
	if err != nil {
		return nil, err
	}
	f.onClose(func() error { ext.close(); return nil })
	s.API = "http://" + ext.Addr()
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Start runs the replica's policy server and waits until its /health answers 200.
func (s *PolicyServer) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil && !s.proc.exited() {
		return errors.New("the policy server is running")
	}
	p, err := startIn(s.NS, "policy-server", s.f.log(s.NS), filepath.Join(s.f.opts.Bin, "policy-server"), "-config-file", s.config)
	if err != nil {
		return err
	}
	s.proc = p
	s.f.onClose(p.stop)
	health := fmt.Sprintf("http://127.0.0.1:%d/health", healthPort)
	err = p.waitReady(ctx, 90*time.Second, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, health, nil)
		if err != nil {
			return err
		}
		resp, err := s.f.clientIn(s.NS).Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("health: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("policy server %s: %w", s.NS, err)
	}
	return nil
}

// Stop stops the replica (a policy server VM going away); Start brings it back.
func (s *PolicyServer) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	return s.proc.stop()
}

func urlWithHost(raw, hostPort string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	u.Host = hostPort
	return u.String(), nil
}

// Netman runs the netman CLI against the first replica's external API.
func (f *Foundation) Netman(ctx context.Context, args ...string) ([]byte, error) {
	return f.Servers[0].Netman(ctx, args...)
}

// Netman runs the netman CLI against this replica's external API.
func (s *PolicyServer) Netman(ctx context.Context, args ...string) ([]byte, error) {
	f := s.f
	cmd := exec.CommandContext(ctx, filepath.Join(f.opts.Bin, "netman"), append([]string{"--api", s.API}, args...)...)
	cmd.Env = append(os.Environ(), "NETMAN_TOKEN="+f.Token)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("netman %v: %w: %s", args, err, out)
	}
	return out, nil
}

// Policy is one policy as the external API takes it.
type Policy struct {
	Source, Destination, Protocol string
	Port                          int
}

// AddPolicies creates policies through the external API in requests of at most 5,000.
func (f *Foundation) AddPolicies(ctx context.Context, ps []Policy) error {
	return f.changePolicies(ctx, "", ps)
}

// RemovePolicies deletes policies through the external API.
func (f *Foundation) RemovePolicies(ctx context.Context, ps []Policy) error {
	return f.changePolicies(ctx, "/delete", ps)
}

func (f *Foundation) changePolicies(ctx context.Context, suffix string, ps []Policy) error {
	for len(ps) > 0 {
		n := min(len(ps), 5000)
		var body apiwire.PoliciesRequestV1
		for _, p := range ps[:n] {
			body.Policies = append(body.Policies, apiwire.PolicyV1{Source: apiwire.Source{ID: p.Source},
				Destination: apiwire.DestinationV1{ID: p.Destination, Protocol: p.Protocol, Ports: apiwire.Ports{Start: p.Port, End: p.Port}}})
		}
		ps = ps[n:]
		b, _ := json.Marshal(body)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.Servers[0].API+"/networking/v1/external/policies"+suffix, bytes.NewReader(b))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+f.Token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
		if err != nil {
			return err
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("external API: %s: %s", resp.Status, data)
		}
	}
	return nil
}
