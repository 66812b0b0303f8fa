package boshrelease

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"netman/internal/testsupport/freeport"
	"netman/internal/testsupport/testenv"
	"netman/lib/mutualtls/mutualtlstest"
)

// etcdTLS issues what an operator's variables would: a CA, a member certificate for
// 127.0.0.1 and a client certificate for flanneld.
func etcdTLS(t testing.TB) (etcdProps, flanneldProps map[string]any, ca *mutualtlstest.Authority) {
	t.Helper()
	ca = mutualtlstest.NewAuthority(t, "etcd CA")
	sc, sk := memberCert(t, ca)
	cc, ck := ca.Issue(t, mutualtlstest.Leaf{CommonName: "flanneld", Client: true})
	return map[string]any{"ca_cert": string(ca.CertPEM), "server_cert": string(sc), "server_key": string(sk)},
		map[string]any{"etcd.ca_cert": string(ca.CertPEM), "etcd.client_cert": string(cc), "etcd.client_key": string(ck)}, ca
}

// memberCert is an etcd member's certificate as the etcd job's spec asks for it: for
// 127.0.0.1, with server and client auth (etcd's own gateway dials the member as a client).
func memberCert(t testing.TB, ca *mutualtlstest.Authority) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "etcd"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
}

// etcdLink is the etcd job's link as the director hands it to consumers.
func etcdLink(clientPort, peerPort int, addresses ...string) map[string]any {
	var instances []map[string]any
	for i, a := range addresses {
		instances = append(instances, map[string]any{"address": a, "id": "etcd-" + strconv.Itoa(i), "index": i})
	}
	return map[string]any{"etcd": map[string]any{
		"properties": map[string]any{"client_port": clientPort, "peer_port": peerPort},
		"instances":  instances,
	}}
}

// TestFlanneldTemplate: the endpoints come from the etcd link (or etcd.endpoints), the
// network configuration is flannel's vxlan backend with GBP on, bad values are refused with
// the property's name, and flanneld is started with the subnet file the CNI job reads.
func TestFlanneldTemplate(t *testing.T) {
	_, tls, _ := etcdTLS(t)
	dir := mustRender(t, "flanneld", props(tls), etcdLink(2379, 2380, "10.0.1.5", "10.0.1.6"))
	endpoints, _ := os.ReadFile(filepath.Join(dir, "config", "etcd_endpoints"))
	if got := strings.TrimSpace(string(endpoints)); got != "https://10.0.1.5:2379,https://10.0.1.6:2379" {
		t.Errorf("etcd endpoints %q", got)
	}
	netConf := readJSON(t, filepath.Join(dir, "config", "network-config.json"))
	want := map[string]any{"Network": "10.255.0.0/16", "SubnetLen": 24.0,
		"Backend": map[string]any{"Type": "vxlan", "VNI": 1.0, "Port": 8472.0, "GBP": true}}
	if !reflect.DeepEqual(netConf, want) {
		t.Errorf("network config %v, want %v", netConf, want)
	}
	script, _ := os.ReadFile(filepath.Join(dir, "bin", "flanneld"))
	cni := readJobSpec(t, "netman-cni")
	for _, arg := range []string{"--subnet-file=" + cni.Properties["flannel.subnet_file"].Default.(string), "--iface=10.0.0.10",
		"--ip-masq=true", "--iptables-forward-rules=false", "--etcd-cafile="} {
		if !strings.Contains(string(script), arg) {
			t.Errorf("bin/flanneld does not pass %s:\n%s", arg, script)
		}
	}
	checkScripts(t, dir)
	var bpm struct {
		Processes []struct {
			Executable string `json:"executable"`
			Unsafe     struct {
				Privileged bool `json:"privileged"`
			} `json:"unsafe"`
		} `json:"processes"`
	}
	yamlFile(t, filepath.Join(dir, "config", "bpm.yml"), &bpm)
	if len(bpm.Processes) != 1 || bpm.Processes[0].Executable != "/var/vcap/jobs/flanneld/bin/flanneld" || !bpm.Processes[0].Unsafe.Privileged {
		t.Errorf("bpm.yml %+v", bpm)
	}

	plain := mustRender(t, "flanneld", props(map[string]any{"etcd.endpoints": []any{"http://etcd.example:2379"}, "gbp": false}), nil)
	if got := readJSON(t, filepath.Join(plain, "config", "network-config.json"))["Backend"].(map[string]any)["GBP"]; got != false {
		t.Errorf("gbp: false gives GBP %v", got)
	}

	for _, c := range []struct {
		props map[string]any
		links map[string]any
		want  string
	}{
		{nil, nil, "etcd.endpoints"},
		{map[string]any{"etcd.endpoints": []any{"https://etcd:2379"}}, nil, "etcd.ca_cert"},
		{map[string]any{"etcd.endpoints": []any{"etcd:2379"}}, nil, "is not an http:// or https:// URL"},
		{with(tls, map[string]any{"network": "10.255.0.0"}), etcdLink(2379, 2380, "10.0.1.5"), "network"},
		{with(tls, map[string]any{"subnet_len": 16}), etcdLink(2379, 2380, "10.0.1.5"), "subnet_len"},
		{with(tls, map[string]any{"vni": 0}), etcdLink(2379, 2380, "10.0.1.5"), "vni"},
	} {
		if _, err := render(t, "flanneld", props(c.props), c.links); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error naming %s", c.props, err, c.want)
		}
	}
}

// TestEtcdTemplate: members from the job's own link, mutual TLS on both ports.
func TestEtcdTemplate(t *testing.T) {
	p, _, _ := etcdTLS(t)
	dir := mustRender(t, "etcd", props(p), etcdLink(2379, 2380, "10.0.2.1", "10.0.2.2", "10.0.2.3"))
	script, _ := os.ReadFile(filepath.Join(dir, "bin", "etcd"))
	for _, arg := range []string{"--initial-cluster=etcd-0=https://10.0.2.1:2380,etcd-1=https://10.0.2.2:2380,etcd-2=https://10.0.2.3:2380",
		"--client-cert-auth", "--peer-client-cert-auth", "--advertise-client-urls=https://10.0.0.10:2379", "--data-dir=\"$data_dir\""} {
		if !strings.Contains(string(script), arg) {
			t.Errorf("bin/etcd does not pass %s:\n%s", arg, script)
		}
	}
	checkScripts(t, dir)
	if _, err := render(t, "etcd", props(with(p, map[string]any{"server_key": "x"})), etcdLink(2379, 2380, "10.0.2.1")); err == nil || !strings.Contains(err.Error(), "server_key") {
		t.Errorf("a key that is not PEM: %v", err)
	}
}

// TestEtcdAndFlanneldPreStart runs the rendered etcd job (the real etcd from the release's
// package, mutual TLS on loopback) and the rendered flanneld pre-start against it: the
// network configuration flanneld will read is in etcd afterwards, over the certificates the
// jobs were given, and a client without a certificate is refused.
func TestEtcdAndFlanneldPreStart(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles etcd (-short)")
	}
	testenv.RequireRoot(t) // pre-start chowns the certificates to root
	curl := testenv.RequireCommand(t, "curl")
	etcdBin := filepath.Join(packageInstall(t, "etcd"), "bin", "etcd")
	ports := freeport.Take(t, 2)
	etcdProps, tls, _ := etcdTLS(t)
	link := etcdLink(ports[0], ports[1], "127.0.0.1")

	etcdDir := mustRenderSpec(t, "etcd", props(with(etcdProps, map[string]any{
		"client_port": ports[0], "peer_port": ports[1], "data_dir": filepath.Join(t.TempDir(), "data")})),
		link, map[string]any{"address": "127.0.0.1", "id": "etcd-0"})
	script := relocateScript(t, etcdDir, "etcd", "/var/vcap/packages/etcd/bin/etcd", etcdBin)
	ctx, cancel := context.WithCancel(context.Background())
	etcd := exec.CommandContext(ctx, "bash", script)
	var logs bytes.Buffer
	etcd.Stdout, etcd.Stderr = &logs, &logs
	if err := etcd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); etcd.Wait() })

	subnetDir := t.TempDir()
	flDir := mustRender(t, "flanneld", props(with(tls, map[string]any{
		"subnet_file": filepath.Join(subnetDir, "subnet.env"), "config_timeout_seconds": 60, "vni": 4097})), link)
	preStart := relocateScript(t, flDir, "flanneld", "", "")
	out, err := exec.Command("bash", preStart).CombinedOutput()
	if err != nil {
		t.Fatalf("flanneld pre-start: %v\n%s\netcd:\n%s", err, out, logs.String())
	}

	// Read the key back over etcd's JSON gateway with flanneld's certificate.
	key := base64.StdEncoding.EncodeToString([]byte("/coreos.com/network/config"))
	get := func(extra ...string) ([]byte, error) {
		args := append([]string{"--silent", "--show-error", "--fail", "--max-time", "10", "--cacert", filepath.Join(flDir, "config", "certs", "etcd_ca.crt")}, extra...)
		args = append(args, "-X", "POST", "-d", `{"key":"`+key+`"}`, "https://127.0.0.1:"+strconv.Itoa(ports[0])+"/v3/kv/range")
		return exec.Command(curl, args...).CombinedOutput()
	}
	body, err := get("--cert", filepath.Join(flDir, "config", "certs", "etcd_client.crt"), "--key", filepath.Join(flDir, "config", "certs", "etcd_client.key"))
	if err != nil {
		t.Fatalf("reading the configuration back: %v\n%s", err, body)
	}
	var r struct{ KVs []struct{ Value string } }
	json.Unmarshal(body, &r)
	if len(r.KVs) != 1 {
		t.Fatalf("range answered %s", body)
	}
	value, _ := base64.StdEncoding.DecodeString(r.KVs[0].Value)
	want, _ := os.ReadFile(filepath.Join(flDir, "config", "network-config.json"))
	if strings.TrimSpace(string(value)) != strings.TrimSpace(string(want)) || !strings.Contains(string(value), `"VNI":4097`) {
		t.Errorf("etcd holds %s, want %s", value, want)
	}
	if out, err := get(); err == nil {
		t.Errorf("etcd answered a client without a certificate: %s", out)
	}
}

// mustRenderSpec renders with the instance spec given (address, id ...).
func mustRenderSpec(t testing.TB, job string, p, links, spec map[string]any) string {
	t.Helper()
	dir, err := renderWith(t, job, p, links, spec)
	if err != nil {
		t.Fatalf("rendering job %s: %v", job, err)
	}
	return dir
}

// relocateScript points a rendered job's scripts at the test's copy of the job directory
// (and, when from is set, a package binary at to), and returns the script named name.
func relocateScript(t testing.TB, dir, job, from, to string) string {
	t.Helper()
	scripts, _ := filepath.Glob(filepath.Join(dir, "bin", "*"))
	for _, s := range scripts {
		data, _ := os.ReadFile(s)
		data = bytes.ReplaceAll(data, []byte("/var/vcap/jobs/"+job), []byte(dir))
		if from != "" {
			data = bytes.ReplaceAll(data, []byte(from), []byte(to))
		}
		writeFile(t, s, string(data), 0o755)
	}
	name := "pre-start"
	if from != "" {
		name = job
	}
	return filepath.Join(dir, "bin", name)
}
