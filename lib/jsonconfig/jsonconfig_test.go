package jsonconfig

import (
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
