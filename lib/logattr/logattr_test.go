package logattr

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestDurationIsMilliseconds(t *testing.T) {
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", Duration(1234567*time.Microsecond), Millis("retry_in_ms", 10*time.Second))
	if !strings.Contains(buf.String(), `"duration_ms":1234.567,"retry_in_ms":10000`) {
		t.Errorf("got %s", buf.String())
	}
}
