#!/usr/bin/env bash
# Start PostgreSQL and MariaDB on this machine if they are stopped, wait until
# they accept connections, and create the test databases and users
# (idempotent; safe to run any number of times). Used by .ci/run before the
# tests and by developers before running tests/integration.
#
#   PostgreSQL 127.0.0.1:5432  db sipdisp_test, owner sipdisp/sipdisp
#   MariaDB    127.0.0.1:3306  db sipdisp_test, user sipdisp/sipdisp
#                              ('localhost' and '127.0.0.1')
set -euo pipefail

wait_for() {  # wait_for NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    local i
    for ((i = 0; i < limit * 4; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    echo "ci-databases: $name did not come up within ${limit}s" >&2
    return 1
}

# -- PostgreSQL ------------------------------------------------------------------
if command -v pg_ctlcluster >/dev/null 2>&1; then
    pgver=$(ls /etc/postgresql | sort -V | tail -n 1)
    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
        echo "ci-databases: starting PostgreSQL $pgver"
        pg_ctlcluster --skip-systemctl-redirect "$pgver" main start || true
    fi
    wait_for PostgreSQL 60 pg_isready -q -h 127.0.0.1 -p 5432
    psql_admin() { psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
    psql_admin -c "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sipdisp') THEN
            CREATE ROLE sipdisp LOGIN PASSWORD 'sipdisp';
        ELSE
            ALTER ROLE sipdisp LOGIN PASSWORD 'sipdisp';
        END IF; END \$\$;"
    if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'sipdisp_test'")" != "1" ]; then
        psql_admin -c "CREATE DATABASE sipdisp_test OWNER sipdisp"
    fi
    psql_admin -d sipdisp_test -c "ALTER SCHEMA public OWNER TO sipdisp"
    echo "ci-databases: PostgreSQL ready (sipdisp_test)"
else
    echo "ci-databases: PostgreSQL is not installed here" >&2
fi

# -- MariaDB -----------------------------------------------------------------------
if [ -x /usr/sbin/mariadbd ]; then
    if ! mysqladmin --protocol=socket -uroot ping >/dev/null 2>&1; then
        echo "ci-databases: starting MariaDB"
        # mariadbd reads user=mysql from /etc/mysql/my.cnf and needs its
        # socket/pid directory
        install -d -o mysql -g mysql /run/mysqld
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    fi
    wait_for MariaDB 60 mysqladmin --protocol=socket -uroot ping
    mariadb --protocol=socket -uroot <<'SQL'
CREATE DATABASE IF NOT EXISTS sipdisp_test;
CREATE USER IF NOT EXISTS 'sipdisp'@'localhost' IDENTIFIED BY 'sipdisp';
CREATE USER IF NOT EXISTS 'sipdisp'@'127.0.0.1' IDENTIFIED BY 'sipdisp';
ALTER USER 'sipdisp'@'localhost' IDENTIFIED BY 'sipdisp';
ALTER USER 'sipdisp'@'127.0.0.1' IDENTIFIED BY 'sipdisp';
GRANT ALL PRIVILEGES ON sipdisp_test.* TO 'sipdisp'@'localhost';
GRANT ALL PRIVILEGES ON sipdisp_test.* TO 'sipdisp'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
    echo "ci-databases: MariaDB ready (sipdisp_test)"
else
    echo "ci-databases: MariaDB is not installed here" >&2
fi
