package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunChecksItsConfiguration(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", `{"policy_server_url":"https://policy-server.service.cf.internal:4003",
		"ca_cert_file":"/nope/ca.crt","client_cert_file":"/nope/client.crt","client_key_file":"/nope/client.key",
		"datastore":"/nope/store.json"}`)
	typo := write("typo.json", `{"policy_server_url":"https://x:4003","ca_cert_file":"a","client_cert_file":"b",
		"client_key_file":"c","datastore":"d","poll_interval_second":5}`)
	tests := []struct {
		name   string
		args   []string
		code   int
		output string
	}{
		{"valid file, files it names not checked", []string{"-config-file", good, "-validate-config"}, 0, "is valid"},
		{"unknown field named", []string{"-config-file", typo, "-validate-config"}, 1, `"poll_interval_second"`},
		{"missing certificates at start", []string{"-config-file", good}, 1, "client_cert_file"},
		{"no config file", nil, 2, "Usage"},
		{"missing file", []string{"-config-file", filepath.Join(dir, "none.json")}, 1, "none.json"},
		{"help", []string{"-h"}, 0, "Usage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			out := stdout.String() + stderr.String()
			if code != tt.code || !strings.Contains(out, tt.output) {
				t.Errorf("exit %d, output %q; want exit %d and %q", code, out, tt.code, tt.output)
			}
		})
	}
}
