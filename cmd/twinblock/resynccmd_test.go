package main

import (
	"errors"
	"net/http/httptest"
	"testing"
)

func TestScanQueryRefusesBadParameters(t *testing.T) {
	for _, c := range []struct {
		query   string
		allowed []string
		ok      bool
		rate    int64
		repair  bool
	}{
		{"", []string{"rate"}, true, -1, false},
		{"rate=1048576", []string{"rate"}, true, 1 << 20, false},
		{"rate=0&repair=true", []string{"rate", "repair"}, true, 0, true},
		{"rate=-5", []string{"rate"}, false, 0, false},
		{"rate=10M", []string{"rate"}, false, 0, false},
		{"repair=true", []string{"rate"}, false, 0, false},
		{"repair=maybe", []string{"repair"}, false, 0, false},
		{"rate=1&rate=2", []string{"rate"}, false, 0, false},
		{"force=true", []string{"rate", "repair"}, false, 0, false},
	} {
		r := httptest.NewRequest("POST", "/v1/volumes/vol0/verify?"+c.query, nil)
		q, err := scanQuery(r, c.allowed...)
		if c.ok != (err == nil) {
			t.Errorf("%q: err %v", c.query, err)
			continue
		}
		if err != nil {
			if !errors.Is(err, errBadRequest) {
				t.Errorf("%q: %v is not a bad request", c.query, err)
			}
			continue
		}
		if q.rate != c.rate || q.repair != c.repair {
			t.Errorf("%q: got %+v", c.query, q)
		}
	}
}
