package testenv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	tcmysql "github.com/testcontainers/testcontainers-go/modules/mysql"
	"github.com/testcontainers/testcontainers-go/wait"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"
)

// MySQLServer is the package's MySQL server: a container started on first use, or the
// server named by COMMERCEKIT_MYSQL_DSN.
type MySQLServer struct {
	// Config connects as a user that may create databases; DBName is empty.
	Config *mysql.Config
	// Version is what the server reports, e.g. "10.11.18-MariaDB-0+deb12u1".
	Version string
}

var (
	mysqlOnce   sync.Once
	mysqlServer *MySQLServer
	mysqlErr    error
)

// MySQL returns a *bun.DB (MySQL dialect) on a fresh database of its own in the package's
// MySQL server. The database is dropped when the test ends.
func MySQL(tb testing.TB) *bun.DB {
	tb.Helper()
	return MySQLAt(tb, MySQLDSN(tb))
}

// MySQLAt returns a *bun.DB (MySQL dialect) on the database of dsn (one of MySQLDSN, say,
// opened again by another process), closed when the test ends.
func MySQLAt(tb testing.TB, dsn string) *bun.DB {
	tb.Helper()
	db := bun.NewDB(openMySQL(tb, dsn), mysqldialect.New())
	tb.Cleanup(func() { db.Close() })
	return db
}

// MySQLDSN creates a fresh database in the package's MySQL server and returns a DSN for it
// (parseTime=true). The database is dropped when the test ends.
func MySQLDSN(tb testing.TB) string {
	tb.Helper()
	srv := MySQLServerFor(tb)
	admin := openMySQL(tb, srv.Config.FormatDSN())
	defer admin.Close()
	name := uniqueName(tb, "t")
	ctx := context.Background()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE `"+name+"`"); err != nil {
		tb.Fatalf("testenv: creating database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		admin := openMySQL(tb, srv.Config.FormatDSN())
		defer admin.Close()
		if _, err := admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS `"+name+"`"); err != nil {
			tb.Errorf("testenv: dropping database %s: %v", name, err)
		}
	})
	cfg := srv.Config.Clone()
	cfg.DBName = name
	return cfg.FormatDSN()
}

func openMySQL(tb testing.TB, dsn string) *sql.DB {
	tb.Helper()
	sqldb, err := sql.Open("mysql", dsn)
	if err != nil {
		tb.Fatalf("testenv: opening MySQL: %v", err)
	}
	sqldb.SetMaxOpenConns(128)
	sqldb.SetMaxIdleConns(128)
	return sqldb
}

// MySQLServerFor returns the package's MySQL server, starting its container on first use.
// It fails the test when no server can be had.
func MySQLServerFor(tb testing.TB) *MySQLServer {
	tb.Helper()
	mysqlOnce.Do(func() { mysqlServer, mysqlErr = startMySQL() })
	if mysqlErr != nil {
		tb.Fatal(mysqlErr)
	}
	return mysqlServer
}

func startMySQL() (*MySQLServer, error) {
	setupEnv()
	if dsn := os.Getenv("COMMERCEKIT_MYSQL_DSN"); dsn != "" {
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, fmt.Errorf("testenv: COMMERCEKIT_MYSQL_DSN: %w", err)
		}
		if cfg.Net == "tcp" {
			host, _, _ := net.SplitHostPort(cfg.Addr)
			if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
				return nil, fmt.Errorf("testenv: COMMERCEKIT_MYSQL_DSN points at %q; tests connect only to loopback", host)
			}
		}
		return finishMySQL(cfg, "the server of COMMERCEKIT_MYSQL_DSN")
	}

	img := image("COMMERCEKIT_MYSQL_IMAGE", DefaultMySQLImage, LocalMySQLImage)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	const password = "commercekit"
	// The wait strategy is a real query, which works for MySQL and MariaDB alike (MariaDB
	// does not print the "MySQL Community Server" line the module waits for by default).
	c, err := startRetrying(func() (testcontainers.Container, error) {
		return orNil(tcmysql.Run(ctx, img,
			tcmysql.WithUsername("root"),
			tcmysql.WithPassword(password),
			tcmysql.WithDatabase("commercekit"),
			testcontainers.WithWaitStrategy(wait.ForSQL("3306/tcp", "mysql", func(host string, port network.Port) string {
				return fmt.Sprintf("root:%s@tcp(%s)/commercekit", password, net.JoinHostPort(host, port.Port()))
			}).WithStartupTimeout(startTimeout)),
		))
	})
	if c != nil {
		terminateAtShutdown("MySQL", c)
	}
	if err != nil {
		return nil, fmt.Errorf("%s", missing("MySQL ("+img+")", err))
	}
	host, err := c.Host(ctx)
	if err != nil {
		return nil, fmt.Errorf("testenv: MySQL container host: %w", err)
	}
	port, err := c.MappedPort(ctx, "3306/tcp")
	if err != nil {
		return nil, fmt.Errorf("testenv: MySQL container port: %w", err)
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd = "root", password
	cfg.Net, cfg.Addr = "tcp", net.JoinHostPort(host, port.Port())
	return finishMySQL(cfg, "a Testcontainers container from "+img)
}

func finishMySQL(cfg *mysql.Config, origin string) (*MySQLServer, error) {
	cfg = cfg.Clone()
	cfg.DBName = ""
	cfg.ParseTime = true
	sqldb, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, err
	}
	defer sqldb.Close()
	var version string
	if err := sqldb.QueryRow("SELECT VERSION()").Scan(&version); err != nil {
		return nil, fmt.Errorf("%s", missing("MySQL", fmt.Errorf("round trip to %s at %s: %w", origin, cfg.Addr, err)))
	}
	fmt.Fprintf(os.Stderr, "testenv: MySQL %s at %s, %s\n", version, cfg.Addr, origin)
	return &MySQLServer{Config: cfg, Version: version}, nil
}

// KillConnections kills, from a connection of db's own, every other connection to db's
// database, as a crash of the server would drop them: a transaction open on one is rolled
// back by the server, and its next statement meets a dropped connection. Call it while the
// transaction under test is open, e.g. from a hook (see KillBefore). It may be called from
// any goroutine: a failure is reported with tb.Errorf (the kill is then incomplete).
func KillConnections(tb testing.TB, db *bun.DB) {
	tb.Helper()
	ctx := context.Background()
	// One connection for the query and every KILL: through the pool, a KILL could be sent
	// on a connection killed a moment before, or kill the one it is sent on.
	conn, err := db.Conn(ctx)
	if err != nil {
		tb.Errorf("testenv: a connection to kill the test database's others from: %v", err)
		return
	}
	defer conn.Close()
	var ids []int64
	err = conn.NewRaw("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND ID <> CONNECTION_ID()").Scan(ctx, &ids)
	if err != nil || len(ids) == 0 {
		tb.Errorf("testenv: find the connections of the test's database (%d found): %v", len(ids), err)
		return
	}
	for _, id := range ids {
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("KILL %d", id)); err != nil && !unknownThread(err) {
			tb.Errorf("testenv: kill connection %d of the test's database: %v", id, err)
			return
		}
	}
}

// unknownThread reports whether err is MySQL's answer to a KILL of a connection that has
// closed since it was listed.
func unknownThread(err error) bool {
	var merr *mysql.MySQLError
	return errors.As(err, &merr) && merr.Number == 1094
}

// KillBefore returns db with a query hook that, once, kills db's other connections
// (KillConnections) just before the first statement containing match is sent, so that the
// statement meets a dropped connection: the fault of a database crash at that step.
func KillBefore(tb testing.TB, db *bun.DB, match string) *bun.DB {
	return db.WithQueryHook(&killBefore{tb: tb, db: db, match: match})
}

type killBefore struct {
	tb    testing.TB
	db    *bun.DB
	match string
	once  sync.Once
}

func (k *killBefore) BeforeQuery(ctx context.Context, e *bun.QueryEvent) context.Context {
	if strings.Contains(e.Query, k.match) {
		k.once.Do(func() { KillConnections(k.tb, k.db) })
	}
	return ctx
}

func (k *killBefore) AfterQuery(context.Context, *bun.QueryEvent) {}

// ImpatientConn returns a connection of its own to db's database that waits at most one
// second for a row lock (innodb_lock_wait_timeout = 1), closed when the test ends: a
// statement on it that fails with a lock wait timeout waited for a lock held elsewhere.
func ImpatientConn(tb testing.TB, db *bun.DB) bun.Conn {
	tb.Helper()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		tb.Fatalf("testenv: a connection of its own: %v", err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	if _, err := conn.ExecContext(ctx, "SET SESSION innodb_lock_wait_timeout = 1"); err != nil {
		tb.Fatalf("testenv: SET SESSION innodb_lock_wait_timeout = 1: %v", err)
	}
	return conn
}
