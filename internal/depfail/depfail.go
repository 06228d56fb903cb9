// Package depfail tells a dependency's failure from every other error, in one place: a
// connection that was refused, broke off or timed out, a connection pool that is exhausted
// or closed, a server that is shutting down, starting up, out of connections or memory, or
// busy — whichever client met it (database/sql and the MySQL driver, go-redis, sarama,
// net). Such an error says nothing about the request, so it is wrapped as
// errcode.ErrUnavailable and answered with "retry later" (HTTP 503 + Retry-After), never
// as a business outcome or a 500.
//
// Backends call Wrap on the errors of their clients (internal/sqlutil does it for SQL);
// an HTTP server calls Is as its last resort for a raw error that slipped through.
//
// The caller's own context ending (context.Canceled, context.DeadlineExceeded) is not a
// dependency failure: it is returned as it is.
package depfail

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/IBM/sarama"
	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"

	"github.com/commercekit/commercekit/errcode"
)

// Is reports whether err says a dependency could not be reached or did not answer in time
// (or already matches errcode.ErrUnavailable).
func Is(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, errcode.ErrUnavailable) {
		return true
	}
	// The caller gave up: never the dependency's fault, even when the dialer reports it
	// as a *net.OpError ("operation was canceled") wrapping context.Canceled.
	if errors.Is(err, context.Canceled) {
		return false
	}
	// A network operation failed: dial refused or timed out, read or write timed out ("i/o
	// timeout"), connection reset. Checked before context.DeadlineExceeded: go-redis and
	// the MySQL driver report a dial timeout as a *net.OpError that may also wrap it.
	var op *net.OpError
	if errors.As(err, &op) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	// Any other network error (a DNS failure, a deadline on a connection); the context
	// errors, which also satisfy net.Error, were excluded above.
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	for _, target := range transportErrors {
		if errors.Is(err, target) {
			return true
		}
	}
	if badConnNoWrite(err) {
		return true
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return mysqlUnavailable[me.Number]
	}
	var ke sarama.KError
	if errors.As(err, &ke) {
		return kafkaUnavailable[ke]
	}
	return redis.IsLoadingError(err) || redis.IsMasterDownError(err) || redis.IsClusterDownError(err) ||
		redis.IsTryAgainError(err) || redis.IsMaxClientsError(err) || redis.IsReadOnlyError(err) ||
		redis.IsOOMError(err) || redis.IsNoReplicasError(err) || redisRefuses(err)
}

// mysqlBadConnNoWrite is the text of go-sql-driver's errBadConnNoWrite: a statement it
// could not send at all, the connection dead. Unexported, so matched by its text; its
// queries turn it into driver.ErrBadConn, but Tx.Commit and Tx.Rollback return it as it is.
const mysqlBadConnNoWrite = "bad connection"

// badConnNoWrite reports whether an error in err's chain is go-sql-driver's
// errBadConnNoWrite (see mysqlBadConnNoWrite).
func badConnNoWrite(err error) bool {
	if err == nil {
		return false
	}
	if err.Error() == mysqlBadConnNoWrite {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return badConnNoWrite(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if badConnNoWrite(e) {
				return true
			}
		}
	}
	return false
}

// redisRefusals are the prefixes of the Redis server's answers that refuse a command for
// a while whatever the command is: a script running past busy-reply-threshold (BUSY), and
// writes stopped because the last snapshot failed (MISCONF). go-redis has no test for them.
var redisRefusals = []string{"BUSY ", "MISCONF "}

// redisRefuses reports whether err is one of redisRefusals.
func redisRefuses(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	for _, p := range redisRefusals {
		if strings.HasPrefix(re.Error(), p) {
			return true
		}
	}
	return false
}

// Wrap returns err as an *errcode.UnavailableError of dependency when Is(err) — err still
// matches what it matched before — and err unchanged otherwise (nil included).
func Wrap(dependency string, err error) error {
	if !Is(err) {
		return err
	}
	return errcode.Unavailable(dependency, err)
}

// transportErrors are sentinels meaning "the connection or the pool failed".
var transportErrors = []error{
	// The connection ended: the server closed it (shutdown, restart, idle kill).
	io.EOF, io.ErrUnexpectedEOF,
	syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED, syscall.EPIPE,
	syscall.ETIMEDOUT, syscall.EHOSTUNREACH, syscall.ENETUNREACH,
	// database/sql and the MySQL driver: a connection found dead ("invalid connection",
	// "bad connection"), or one used after it was closed.
	driver.ErrBadConn, sql.ErrConnDone, mysql.ErrInvalidConn, mysql.ErrMalformPkt,
	mysql.ErrPktSync, mysql.ErrPktSyncMul,
	// go-redis: no free connection within PoolTimeout; the client closed.
	redis.ErrPoolTimeout, redis.ErrClosed,
	// sarama: no broker reachable, the client closed or not connected.
	sarama.ErrOutOfBrokers, sarama.ErrNotConnected, sarama.ErrClosedClient, sarama.ErrShuttingDown,
}

// mysqlUnavailable are the MySQL/MariaDB server errors that mean "the server cannot serve
// you now", not "your statement is wrong": it is shutting down, read-only, out of
// connections, or out of a resource (disk, memory, threads) that an operator or time gives
// back.
var mysqlUnavailable = map[uint16]bool{
	1021: true, // ER_DISK_FULL
	1026: true, // ER_ERROR_ON_WRITE: a file could not be written (errno 28: no space)
	1030: true, // ER_GET_ERRNO: the storage engine failed (errno 28: no space)
	1037: true, // ER_OUTOFMEMORY
	1038: true, // ER_OUT_OF_SORTMEMORY
	1040: true, // ER_CON_COUNT_ERROR: too many connections
	1041: true, // ER_OUT_OF_RESOURCES
	1053: true, // ER_SERVER_SHUTDOWN: server shutdown in progress
	1114: true, // ER_RECORD_FILE_FULL: "the table is full" (its disk is full)
	1135: true, // ER_CANT_CREATE_THREAD
	1152: true, // ER_ABORTING_CONNECTION
	1180: true, // ER_ERROR_DURING_COMMIT (e.g. no space for the log)
	1203: true, // ER_TOO_MANY_USER_CONNECTIONS
	1226: true, // ER_USER_LIMIT_REACHED: a per-account resource limit (max_queries_per_hour...)
	1290: true, // ER_OPTION_PREVENTS_STATEMENT: --read-only (a replica, a failover in progress)
	1317: true, // ER_QUERY_INTERRUPTED (the server is shutting down)
	1836: true, // ER_READ_ONLY_MODE: the server runs in read-only mode
	1927: true, // MariaDB ER_CONNECTION_KILLED
	1969: true, // MariaDB ER_STATEMENT_TIMEOUT: max_statement_time exceeded
	3024: true, // MySQL ER_QUERY_TIMEOUT: max_execution_time exceeded
	4031: true, // MySQL 8: the client was disconnected by the server
}

// kafkaUnavailable are the broker answers that mean "no broker can take it now".
var kafkaUnavailable = map[sarama.KError]bool{
	sarama.ErrLeaderNotAvailable: true, sarama.ErrNotLeaderForPartition: true, sarama.ErrRequestTimedOut: true,
	sarama.ErrBrokerNotAvailable: true, sarama.ErrNetworkException: true, sarama.ErrNotEnoughReplicas: true,
	sarama.ErrNotEnoughReplicasAfterAppend: true, sarama.ErrKafkaStorageError: true,
	sarama.ErrNotCoordinatorForConsumer: true, sarama.ErrConsumerCoordinatorNotAvailable: true,
}
