
/*
 * ragnx worker pool: the schema.  The migrations in sql/ (embedded at
 * build time by scripts/embed-sql), applied by "ragnx-worker migrate",
 * and the check a worker makes before it reads any job: the database has
 * them all.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ragnx_db.h"


typedef struct {
    int           version;
    const char   *name;
    const char   *sql;
} ragnx_migration_t;


extern const ragnx_migration_t  ragnx_migrations[];


/*
 * Apply the migrations not yet recorded in schema_migrations, each in its
 * own transaction, under an advisory lock so concurrent runs are safe.
 */

int
ragnx_db_migrate(PGconn *conn)
{
    int                       rc, applied;
    char                      ver[16];
    const char               *params[2];
    PGresult                 *res;
    const ragnx_migration_t  *m;

    res = PQexec(conn, "SELECT pg_advisory_lock(478560413816)");
    rc = ragnx_db_ok(conn, res, PGRES_TUPLES_OK, "advisory lock");
    PQclear(res);

    if (rc != RAGNX_OK) {
        return RAGNX_ERROR;
    }

    res = PQexec(conn, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                 "version integer PRIMARY KEY, name text NOT NULL, "
                 "applied_at timestamptz NOT NULL DEFAULT now())");
    rc = ragnx_db_ok(conn, res, PGRES_COMMAND_OK, "schema_migrations");
    PQclear(res);

    applied = 0;

    for (m = ragnx_migrations; rc == RAGNX_OK && m->name; m++) {
        snprintf(ver, sizeof(ver), "%d", m->version);
        params[0] = ver;
        params[1] = m->name;

        res = PQexecParams(conn, "SELECT 1 FROM schema_migrations "
                           "WHERE version = $1", 1, NULL, params, NULL,
                           NULL, 0);
        rc = ragnx_db_ok(conn, res, PGRES_TUPLES_OK, "migration check");

        if (rc != RAGNX_OK || PQntuples(res) > 0) {
            PQclear(res);
            continue;
        }

        PQclear(res);

        res = PQexec(conn, "BEGIN");
        PQclear(res);

        res = PQexec(conn, m->sql);
        rc = ragnx_db_ok(conn, res, PGRES_COMMAND_OK, m->name);
        PQclear(res);

        if (rc == RAGNX_OK) {
            res = PQexecParams(conn, "INSERT INTO schema_migrations "
                               "(version, name) VALUES ($1, $2)", 2, NULL,
                               params, NULL, NULL, 0);
            rc = ragnx_db_ok(conn, res, PGRES_COMMAND_OK, "migration record");
            PQclear(res);
        }

        res = PQexec(conn, rc == RAGNX_OK ? "COMMIT" : "ROLLBACK");
        if (rc == RAGNX_OK) {
            rc = ragnx_db_ok(conn, res, PGRES_COMMAND_OK, "commit");
        }

        PQclear(res);

        if (rc == RAGNX_OK) {
            ragnx_log(RAGNX_LOG_INFO, "applied migration %s", m->name);
            applied++;
        }
    }

    res = PQexec(conn, "SELECT pg_advisory_unlock(478560413816)");
    PQclear(res);

    if (rc == RAGNX_OK && applied == 0) {
        ragnx_log(RAGNX_LOG_INFO, "database is up to date");
    }

    return rc;
}


int
ragnx_db_check_schema(PGconn *conn, char *err, size_t errlen)
{
    int                       want, have;
    size_t                    n;
    PGresult                 *res;
    const char               *state;
    const ragnx_migration_t  *m;

    want = 0;
    for (m = ragnx_migrations; m->name; m++) {
        want = m->version;
    }

    res = ragnx_db_exec(conn, "SELECT coalesce(max(version), 0) "
                        "FROM schema_migrations", 0, NULL, "schema check");

    /* what went wrong, said as it is: only a missing table is "migrate" */

    state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    if (state && strcmp(state, "42P01") == 0) {
        snprintf(err, errlen, "database not migrated: run "
                 "\"ragnx-worker migrate\"");
        PQclear(res);
        return RAGNX_ERROR;
    }

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "postgres schema check failed: %s",
                 res == NULL ? (PQstatus(conn) == CONNECTION_OK
                                ? "no answer in time"
                                : "connection lost")
                 : PQresultErrorMessage(res));
        PQclear(res);

        for (n = strlen(err); n > 0 && err[n - 1] == '\n'; n--) {
            err[n - 1] = '\0';
        }

        return RAGNX_ERROR;
    }

    have = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);

    if (have < want) {
        snprintf(err, errlen, "database schema version %d, need %d: run "
                 "\"ragnx-worker migrate\"", have, want);
        return RAGNX_ERROR;
    }

    return RAGNX_OK;
}
