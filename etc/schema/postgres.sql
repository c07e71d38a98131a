-- sipdisp schema for postgres, generated from sipdisp/storage/schema.py
-- (sipdisp db ddl postgres). Kamailio 5.x / OpenSIPS 3.x compatible;
-- every statement is idempotent, so it can run on an existing
-- kamctl-created database.

CREATE TABLE IF NOT EXISTS "version" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "table_name" VARCHAR(32) NOT NULL,
    "table_version" INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_table_name_idx UNIQUE ("table_name")
);

INSERT INTO "version" ("table_name", "table_version") SELECT 'version', 1 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'version');

CREATE TABLE IF NOT EXISTS "dispatcher" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "setid" INTEGER DEFAULT 0 NOT NULL,
    "destination" VARCHAR(192) DEFAULT '' NOT NULL,
    "flags" INTEGER DEFAULT 0 NOT NULL,
    "priority" INTEGER DEFAULT 0 NOT NULL,
    "attrs" VARCHAR(128) DEFAULT '' NOT NULL,
    "description" VARCHAR(64) DEFAULT '' NOT NULL
);

INSERT INTO "version" ("table_name", "table_version") SELECT 'dispatcher', 4 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'dispatcher');

CREATE TABLE IF NOT EXISTS "load_balancer" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "group_id" INTEGER DEFAULT 0 NOT NULL,
    "dst_uri" VARCHAR(128) NOT NULL,
    "resources" VARCHAR(255) NOT NULL,
    "probe_mode" INTEGER DEFAULT 0 NOT NULL,
    "attrs" VARCHAR(255) DEFAULT NULL,
    "description" VARCHAR(128) DEFAULT NULL
);

CREATE INDEX IF NOT EXISTS load_balancer_dsturi_idx ON "load_balancer" ("dst_uri");

INSERT INTO "version" ("table_name", "table_version") SELECT 'load_balancer', 3 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'load_balancer');

CREATE TABLE IF NOT EXISTS "location" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "ruid" VARCHAR(64) DEFAULT '' NOT NULL,
    "username" VARCHAR(64) DEFAULT '' NOT NULL,
    "domain" VARCHAR(64) DEFAULT NULL,
    "contact" VARCHAR(512) DEFAULT '' NOT NULL,
    "received" VARCHAR(128) DEFAULT NULL,
    "path" VARCHAR(512) DEFAULT NULL,
    "expires" TIMESTAMP WITHOUT TIME ZONE DEFAULT '2030-05-28 21:32:15' NOT NULL,
    "q" REAL DEFAULT 1.0 NOT NULL,
    "callid" VARCHAR(255) DEFAULT 'Default-Call-ID' NOT NULL,
    "cseq" INTEGER DEFAULT 1 NOT NULL,
    "last_modified" TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:01' NOT NULL,
    "flags" INTEGER DEFAULT 0 NOT NULL,
    "cflags" INTEGER DEFAULT 0 NOT NULL,
    "user_agent" VARCHAR(255) DEFAULT '' NOT NULL,
    "socket" VARCHAR(64) DEFAULT NULL,
    "methods" INTEGER DEFAULT NULL,
    "instance" VARCHAR(255) DEFAULT NULL,
    "reg_id" INTEGER DEFAULT 0 NOT NULL,
    "server_id" INTEGER DEFAULT 0 NOT NULL,
    "connection_id" INTEGER DEFAULT 0 NOT NULL,
    "keepalive" INTEGER DEFAULT 0 NOT NULL,
    "partition" INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT location_ruid_idx UNIQUE ("ruid")
);

CREATE INDEX IF NOT EXISTS location_account_contact_idx ON "location" ("username", "domain", "contact");

CREATE INDEX IF NOT EXISTS location_expires_idx ON "location" ("expires");

CREATE INDEX IF NOT EXISTS location_tcpcon_idx ON "location" ("connection_id");

CREATE INDEX IF NOT EXISTS location_connection_idx ON "location" ("server_id", "connection_id");

INSERT INTO "version" ("table_name", "table_version") SELECT 'location', 9 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'location');

CREATE TABLE IF NOT EXISTS "subscriber" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "username" VARCHAR(64) DEFAULT '' NOT NULL,
    "domain" VARCHAR(64) DEFAULT '' NOT NULL,
    "password" VARCHAR(64) DEFAULT '' NOT NULL,
    "ha1" VARCHAR(128) DEFAULT '' NOT NULL,
    "ha1b" VARCHAR(128) DEFAULT '' NOT NULL,
    CONSTRAINT subscriber_account_idx UNIQUE ("username", "domain")
);

CREATE INDEX IF NOT EXISTS subscriber_username_idx ON "subscriber" ("username");

INSERT INTO "version" ("table_name", "table_version") SELECT 'subscriber', 7 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'subscriber');

CREATE TABLE IF NOT EXISTS "acc" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "method" VARCHAR(16) DEFAULT '' NOT NULL,
    "from_tag" VARCHAR(128) DEFAULT '' NOT NULL,
    "to_tag" VARCHAR(128) DEFAULT '' NOT NULL,
    "callid" VARCHAR(255) DEFAULT '' NOT NULL,
    "sip_code" VARCHAR(3) DEFAULT '' NOT NULL,
    "sip_reason" VARCHAR(128) DEFAULT '' NOT NULL,
    "time" TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    "src_user" VARCHAR(64) DEFAULT '' NOT NULL,
    "src_domain" VARCHAR(128) DEFAULT '' NOT NULL,
    "src_ip" VARCHAR(64) DEFAULT '' NOT NULL,
    "dst_ouser" VARCHAR(64) DEFAULT '' NOT NULL,
    "dst_user" VARCHAR(64) DEFAULT '' NOT NULL,
    "dst_domain" VARCHAR(128) DEFAULT '' NOT NULL
);

CREATE INDEX IF NOT EXISTS acc_callid_idx ON "acc" ("callid");

INSERT INTO "version" ("table_name", "table_version") SELECT 'acc', 5 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'acc');

CREATE TABLE IF NOT EXISTS "acc_cdrs" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "start_time" TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:00' NOT NULL,
    "end_time" TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:00' NOT NULL,
    "duration" REAL DEFAULT 0 NOT NULL
);

CREATE INDEX IF NOT EXISTS acc_cdrs_start_time_idx ON "acc_cdrs" ("start_time");

INSERT INTO "version" ("table_name", "table_version") SELECT 'acc_cdrs', 2 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'acc_cdrs');

CREATE TABLE IF NOT EXISTS "missed_calls" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "method" VARCHAR(16) DEFAULT '' NOT NULL,
    "from_tag" VARCHAR(128) DEFAULT '' NOT NULL,
    "to_tag" VARCHAR(128) DEFAULT '' NOT NULL,
    "callid" VARCHAR(255) DEFAULT '' NOT NULL,
    "sip_code" VARCHAR(3) DEFAULT '' NOT NULL,
    "sip_reason" VARCHAR(128) DEFAULT '' NOT NULL,
    "time" TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    "src_user" VARCHAR(64) DEFAULT '' NOT NULL,
    "src_domain" VARCHAR(128) DEFAULT '' NOT NULL,
    "src_ip" VARCHAR(64) DEFAULT '' NOT NULL,
    "dst_ouser" VARCHAR(64) DEFAULT '' NOT NULL,
    "dst_user" VARCHAR(64) DEFAULT '' NOT NULL,
    "dst_domain" VARCHAR(128) DEFAULT '' NOT NULL
);

CREATE INDEX IF NOT EXISTS missed_calls_callid_idx ON "missed_calls" ("callid");

INSERT INTO "version" ("table_name", "table_version") SELECT 'missed_calls', 4 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'missed_calls');

CREATE TABLE IF NOT EXISTS "dialog" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "hash_entry" INTEGER NOT NULL,
    "hash_id" INTEGER NOT NULL,
    "callid" VARCHAR(255) NOT NULL,
    "from_uri" VARCHAR(255) NOT NULL,
    "from_tag" VARCHAR(128) NOT NULL,
    "to_uri" VARCHAR(255) NOT NULL,
    "to_tag" VARCHAR(128) NOT NULL,
    "caller_cseq" VARCHAR(20) NOT NULL,
    "callee_cseq" VARCHAR(20) NOT NULL,
    "caller_route_set" VARCHAR(512),
    "callee_route_set" VARCHAR(512),
    "caller_contact" VARCHAR(255) NOT NULL,
    "callee_contact" VARCHAR(255) NOT NULL,
    "caller_sock" VARCHAR(64) NOT NULL,
    "callee_sock" VARCHAR(64) NOT NULL,
    "state" INTEGER NOT NULL,
    "start_time" INTEGER NOT NULL,
    "timeout" INTEGER DEFAULT 0 NOT NULL,
    "sflags" INTEGER DEFAULT 0 NOT NULL,
    "iflags" INTEGER DEFAULT 0 NOT NULL,
    "toroute_name" VARCHAR(32),
    "req_uri" VARCHAR(255) NOT NULL,
    "xdata" VARCHAR(512)
);

CREATE INDEX IF NOT EXISTS dialog_hash_idx ON "dialog" ("hash_entry", "hash_id");

INSERT INTO "version" ("table_name", "table_version") SELECT 'dialog', 7 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'dialog');

CREATE TABLE IF NOT EXISTS "dialog_vars" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "hash_entry" INTEGER NOT NULL,
    "hash_id" INTEGER NOT NULL,
    "dialog_key" VARCHAR(128) NOT NULL,
    "dialog_value" VARCHAR(512) NOT NULL
);

CREATE INDEX IF NOT EXISTS dialog_vars_hash_idx ON "dialog_vars" ("hash_entry", "hash_id");

INSERT INTO "version" ("table_name", "table_version") SELECT 'dialog_vars', 1 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'dialog_vars');

CREATE TABLE IF NOT EXISTS "domain" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "domain" VARCHAR(64) NOT NULL,
    "did" VARCHAR(64) DEFAULT NULL,
    "last_modified" TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:01' NOT NULL,
    CONSTRAINT domain_domain_idx UNIQUE ("domain")
);

INSERT INTO "version" ("table_name", "table_version") SELECT 'domain', 2 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'domain');

CREATE TABLE IF NOT EXISTS "dbaliases" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "alias_username" VARCHAR(64) DEFAULT '' NOT NULL,
    "alias_domain" VARCHAR(64) DEFAULT '' NOT NULL,
    "username" VARCHAR(64) DEFAULT '' NOT NULL,
    "domain" VARCHAR(64) DEFAULT '' NOT NULL
);

CREATE INDEX IF NOT EXISTS dbaliases_alias_user_idx ON "dbaliases" ("alias_username");

CREATE INDEX IF NOT EXISTS dbaliases_alias_idx ON "dbaliases" ("alias_username", "alias_domain");

CREATE INDEX IF NOT EXISTS dbaliases_target_idx ON "dbaliases" ("username", "domain");

INSERT INTO "version" ("table_name", "table_version") SELECT 'dbaliases', 1 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'dbaliases');

CREATE TABLE IF NOT EXISTS "dialplan" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "dpid" INTEGER NOT NULL,
    "pr" INTEGER NOT NULL,
    "match_op" INTEGER NOT NULL,
    "match_exp" VARCHAR(64) NOT NULL,
    "match_len" INTEGER NOT NULL,
    "subst_exp" VARCHAR(64) NOT NULL,
    "repl_exp" VARCHAR(64) NOT NULL,
    "attrs" VARCHAR(64) NOT NULL
);

INSERT INTO "version" ("table_name", "table_version") SELECT 'dialplan', 2 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'dialplan');

CREATE TABLE IF NOT EXISTS "silo" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "src_addr" VARCHAR(128) DEFAULT '' NOT NULL,
    "dst_addr" VARCHAR(128) DEFAULT '' NOT NULL,
    "username" VARCHAR(64) DEFAULT '' NOT NULL,
    "domain" VARCHAR(64) DEFAULT '' NOT NULL,
    "inc_time" INTEGER DEFAULT 0 NOT NULL,
    "exp_time" INTEGER DEFAULT 0 NOT NULL,
    "snd_time" INTEGER DEFAULT 0 NOT NULL,
    "ctype" VARCHAR(32) DEFAULT 'text/plain' NOT NULL,
    "body" BYTEA,
    "extra_hdrs" TEXT,
    "callid" VARCHAR(128) DEFAULT '' NOT NULL,
    "status" INTEGER DEFAULT 0 NOT NULL
);

CREATE INDEX IF NOT EXISTS silo_account_idx ON "silo" ("username", "domain");

INSERT INTO "version" ("table_name", "table_version") SELECT 'silo', 8 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'silo');

CREATE TABLE IF NOT EXISTS "presentity" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "username" VARCHAR(64) NOT NULL,
    "domain" VARCHAR(64) NOT NULL,
    "event" VARCHAR(64) NOT NULL,
    "etag" VARCHAR(128) NOT NULL,
    "expires" INTEGER NOT NULL,
    "received_time" INTEGER NOT NULL,
    "body" BYTEA NOT NULL,
    "sender" VARCHAR(255) NOT NULL,
    "priority" INTEGER DEFAULT 0 NOT NULL,
    "ruid" VARCHAR(64),
    CONSTRAINT presentity_presentity_idx UNIQUE ("username", "domain", "event", "etag"),
    CONSTRAINT presentity_ruid_idx UNIQUE ("ruid")
);

CREATE INDEX IF NOT EXISTS presentity_presentity_expires ON "presentity" ("expires");

CREATE INDEX IF NOT EXISTS presentity_account_idx ON "presentity" ("username", "domain", "event");

INSERT INTO "version" ("table_name", "table_version") SELECT 'presentity', 5 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'presentity');

CREATE TABLE IF NOT EXISTS "active_watchers" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "presentity_uri" VARCHAR(255) NOT NULL,
    "watcher_username" VARCHAR(64) NOT NULL,
    "watcher_domain" VARCHAR(64) NOT NULL,
    "to_user" VARCHAR(64) NOT NULL,
    "to_domain" VARCHAR(64) NOT NULL,
    "event" VARCHAR(64) DEFAULT 'presence' NOT NULL,
    "event_id" VARCHAR(64),
    "to_tag" VARCHAR(128) NOT NULL,
    "from_tag" VARCHAR(128) NOT NULL,
    "callid" VARCHAR(255) NOT NULL,
    "local_cseq" INTEGER NOT NULL,
    "remote_cseq" INTEGER NOT NULL,
    "contact" VARCHAR(255) NOT NULL,
    "record_route" TEXT,
    "expires" INTEGER NOT NULL,
    "status" INTEGER DEFAULT 2 NOT NULL,
    "reason" VARCHAR(64),
    "version" INTEGER DEFAULT 0 NOT NULL,
    "socket_info" VARCHAR(64) NOT NULL,
    "local_contact" VARCHAR(255) NOT NULL,
    "from_user" VARCHAR(64) NOT NULL,
    "from_domain" VARCHAR(64) NOT NULL,
    "updated" INTEGER NOT NULL,
    "updated_winfo" INTEGER NOT NULL,
    "flags" INTEGER DEFAULT 0 NOT NULL,
    "user_agent" VARCHAR(255) DEFAULT '',
    CONSTRAINT active_watchers_active_watchers_idx UNIQUE ("callid", "to_tag", "from_tag")
);

CREATE INDEX IF NOT EXISTS active_watchers_active_watchers_expires ON "active_watchers" ("expires");

CREATE INDEX IF NOT EXISTS active_watchers_active_watchers_pres ON "active_watchers" ("presentity_uri", "event");

CREATE INDEX IF NOT EXISTS active_watchers_updated_idx ON "active_watchers" ("updated");

CREATE INDEX IF NOT EXISTS active_watchers_updated_winfo_idx ON "active_watchers" ("updated_winfo", "presentity_uri");

INSERT INTO "version" ("table_name", "table_version") SELECT 'active_watchers', 12 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'active_watchers');

CREATE TABLE IF NOT EXISTS "watchers" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "presentity_uri" VARCHAR(255) NOT NULL,
    "watcher_username" VARCHAR(64) NOT NULL,
    "watcher_domain" VARCHAR(64) NOT NULL,
    "event" VARCHAR(64) DEFAULT 'presence' NOT NULL,
    "status" INTEGER NOT NULL,
    "reason" VARCHAR(64),
    "inserted_time" INTEGER NOT NULL,
    CONSTRAINT watchers_watcher_idx UNIQUE ("presentity_uri", "watcher_username", "watcher_domain", "event")
);

INSERT INTO "version" ("table_name", "table_version") SELECT 'watchers', 3 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'watchers');

CREATE TABLE IF NOT EXISTS "xcap" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "username" VARCHAR(64) NOT NULL,
    "domain" VARCHAR(64) NOT NULL,
    "doc" BYTEA NOT NULL,
    "doc_type" INTEGER NOT NULL,
    "etag" VARCHAR(128) NOT NULL,
    "source" INTEGER NOT NULL,
    "doc_uri" VARCHAR(255) NOT NULL,
    "port" INTEGER NOT NULL,
    CONSTRAINT xcap_doc_uri_idx UNIQUE ("doc_uri")
);

CREATE INDEX IF NOT EXISTS xcap_account_doc_type_idx ON "xcap" ("username", "domain", "doc_type");

CREATE INDEX IF NOT EXISTS xcap_account_doc_type_uri_idx ON "xcap" ("username", "domain", "doc_type", "doc_uri");

CREATE INDEX IF NOT EXISTS xcap_account_doc_uri_idx ON "xcap" ("username", "domain", "doc_uri");

INSERT INTO "version" ("table_name", "table_version") SELECT 'xcap', 4 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'xcap');

CREATE TABLE IF NOT EXISTS "dr_gateways" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "gwid" VARCHAR(64) NOT NULL,
    "type" INTEGER DEFAULT 0 NOT NULL,
    "address" VARCHAR(128) NOT NULL,
    "strip" INTEGER DEFAULT 0 NOT NULL,
    "pri_prefix" VARCHAR(16) DEFAULT NULL,
    "attrs" VARCHAR(255) DEFAULT NULL,
    "probe_mode" INTEGER DEFAULT 0 NOT NULL,
    "state" INTEGER DEFAULT 0 NOT NULL,
    "socket" VARCHAR(128) DEFAULT NULL,
    "description" VARCHAR(128) DEFAULT NULL,
    CONSTRAINT dr_gateways_dr_gw_idx UNIQUE ("gwid")
);

INSERT INTO "version" ("table_name", "table_version") SELECT 'dr_gateways', 6 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'dr_gateways');

CREATE TABLE IF NOT EXISTS "dr_rules" (
    "ruleid" SERIAL PRIMARY KEY NOT NULL,
    "groupid" VARCHAR(255) NOT NULL,
    "prefix" VARCHAR(64) NOT NULL,
    "timerec" VARCHAR(255) DEFAULT NULL,
    "priority" INTEGER DEFAULT 0 NOT NULL,
    "routeid" VARCHAR(255) DEFAULT NULL,
    "gwlist" VARCHAR(255) NOT NULL,
    "sort_alg" VARCHAR(1) DEFAULT 'N' NOT NULL,
    "sort_profile" INTEGER DEFAULT NULL,
    "attrs" VARCHAR(255) DEFAULT NULL,
    "description" VARCHAR(128) DEFAULT NULL
);

INSERT INTO "version" ("table_name", "table_version") SELECT 'dr_rules', 4 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'dr_rules');

CREATE TABLE IF NOT EXISTS "dr_carriers" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "carrierid" VARCHAR(64) NOT NULL,
    "gwlist" VARCHAR(255) NOT NULL,
    "flags" INTEGER DEFAULT 0 NOT NULL,
    "sort_alg" VARCHAR(1) DEFAULT 'N' NOT NULL,
    "state" INTEGER DEFAULT 0 NOT NULL,
    "attrs" VARCHAR(255) DEFAULT NULL,
    "description" VARCHAR(128) DEFAULT NULL,
    CONSTRAINT dr_carriers_dr_carrier_idx UNIQUE ("carrierid")
);

INSERT INTO "version" ("table_name", "table_version") SELECT 'dr_carriers', 3 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'dr_carriers');

CREATE TABLE IF NOT EXISTS "dr_groups" (
    "id" SERIAL PRIMARY KEY NOT NULL,
    "username" VARCHAR(64) NOT NULL,
    "domain" VARCHAR(128) DEFAULT NULL,
    "groupid" INTEGER DEFAULT 0 NOT NULL,
    "description" VARCHAR(128) DEFAULT NULL
);

INSERT INTO "version" ("table_name", "table_version") SELECT 'dr_groups', 2 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'dr_groups');

CREATE TABLE IF NOT EXISTS "cdrs" (
    "cdr_id" BIGSERIAL PRIMARY KEY NOT NULL,
    "start_time" TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:00' NOT NULL,
    "end_time" TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:00' NOT NULL,
    "duration" REAL DEFAULT 0 NOT NULL,
    "setuptime" INTEGER DEFAULT 0 NOT NULL,
    "callid" VARCHAR(255) DEFAULT '' NOT NULL,
    "from_tag" VARCHAR(128) DEFAULT '' NOT NULL,
    "to_tag" VARCHAR(128) DEFAULT '' NOT NULL,
    "src_user" VARCHAR(64) DEFAULT '' NOT NULL,
    "src_domain" VARCHAR(128) DEFAULT '' NOT NULL,
    "src_ip" VARCHAR(64) DEFAULT '' NOT NULL,
    "dst_ouser" VARCHAR(64) DEFAULT '' NOT NULL,
    "dst_user" VARCHAR(64) DEFAULT '' NOT NULL,
    "dst_domain" VARCHAR(128) DEFAULT '' NOT NULL,
    "sip_code" VARCHAR(3) DEFAULT '' NOT NULL,
    "sip_reason" VARCHAR(128) DEFAULT '' NOT NULL,
    CONSTRAINT cdrs_uk_cft UNIQUE ("callid", "from_tag", "to_tag")
);

CREATE INDEX IF NOT EXISTS cdrs_start_time_idx ON "cdrs" ("start_time");

INSERT INTO "version" ("table_name", "table_version") SELECT 'cdrs', 1 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'cdrs');

CREATE TABLE IF NOT EXISTS "sipdisp_batches" (
    "token" VARCHAR(64) NOT NULL,
    "created" TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:00' NOT NULL,
    CONSTRAINT sipdisp_batches_token_idx UNIQUE ("token")
);

INSERT INTO "version" ("table_name", "table_version") SELECT 'sipdisp_batches', 1 WHERE NOT EXISTS (SELECT 1 FROM "version" WHERE "table_name" = 'sipdisp_batches');

