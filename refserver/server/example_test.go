package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/commercekit/commercekit/refserver/server"
)

// The reference server embedded in a Go program, on SQLite in a temporary directory: a
// member signs up, logs in, and reads their orders with the access token; without it the
// route is 401.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "refserver-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	cfg := server.Defaults()
	cfg.DBDSN = filepath.Join(dir, "refserver.db")
	srv, err := server.New(ctx, cfg) // the embedded default; Run would listen on cfg.Addr
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	ts := httptest.NewServer(srv.Handler()) // loopback only
	defer ts.Close()

	call := func(method, path, token string, in, out any) int {
		var body bytes.Buffer
		if in != nil {
			if err := json.NewEncoder(&body).Encode(in); err != nil {
				panic(err)
			}
		}
		req, err := http.NewRequestWithContext(ctx, method, ts.URL+path, &body)
		if err != nil {
			panic(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		if out != nil {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				panic(err)
			}
		}
		return resp.StatusCode
	}

	creds := server.SignUpJSON{LoginID: "kim", Password: "correct horse battery"}
	fmt.Println("sign up:", call(http.MethodPost, "/v1/members", "", creds, nil))
	var sess server.SessionJSON
	fmt.Println("log in:", call(http.MethodPost, "/v1/sessions", "", creds, &sess), sess.TokenType)
	fmt.Println("my orders:", call(http.MethodGet, "/v1/orders", sess.AccessToken, nil, nil))
	fmt.Println("without a token:", call(http.MethodGet, "/v1/orders", "", nil, nil))
	// Output:
	// sign up: 201
	// log in: 201 Bearer
	// my orders: 200
	// without a token: 401
}
