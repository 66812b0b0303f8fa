package jsonconfig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type sample struct {
	Port int    `json:"port"`
	Name string `json:"name"`
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name, in, wantErr string
		want              sample
	}{
		{name: "defaults kept", in: `{"name":"x"}`, want: sample{Port: 7, Name: "x"}},
		{name: "unknown field", in: `{"prot":1}`, wantErr: `unknown field "prot"`},
		{name: "wrong type", in: `{"port":"80"}`, wantErr: `field "port": string is not a valid int`},
		{name: "not JSON", in: `port: 80`, wantErr: "parsing JSON"},
		{name: "data after the object", in: `{"port":1} {}`, wantErr: "unexpected data after the top-level object"},
		{name: "empty", in: ``, wantErr: "parsing JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := sample{Port: 7}
			err := Decode([]byte(tc.in), &got)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	validate := func(s *sample) error {
		if s.Port < 1 {
			return errors.New(`field "port": must be at least 1`)
		}
		return nil
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(good, []byte(`{"name":"x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(`{"port":0}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := Load(good, sample{Port: 7}, validate); err != nil || *got != (sample{Port: 7, Name: "x"}) {
		t.Fatalf("Load(good) = %+v, %v", got, err)
	}
	if _, err := Load(bad, sample{Port: 7}, validate); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), `"port"`) {
		t.Fatalf("Load(bad) error = %v, want the file and the field named", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.json"), sample{}, validate); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Fatalf("Load(missing) error = %v, want the file named", err)
	}
}
