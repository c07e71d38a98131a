-- sipdisp schema for mysql, generated from sipdisp/storage/schema.py
-- (sipdisp db ddl mysql). Kamailio 5.x / OpenSIPS 3.x compatible;
-- every statement is idempotent, so it can run on an existing
-- kamctl-created database.

CREATE TABLE IF NOT EXISTS `version` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `table_name` VARCHAR(32) NOT NULL,
    `table_version` INT(10) UNSIGNED DEFAULT 0 NOT NULL,
    CONSTRAINT table_name_idx UNIQUE (`table_name`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'version', 1 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'version');

CREATE TABLE IF NOT EXISTS `dispatcher` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `setid` INT(11) DEFAULT 0 NOT NULL,
    `destination` VARCHAR(192) DEFAULT '' NOT NULL,
    `flags` INT(11) DEFAULT 0 NOT NULL,
    `priority` INT(11) DEFAULT 0 NOT NULL,
    `attrs` VARCHAR(128) DEFAULT '' NOT NULL,
    `description` VARCHAR(64) DEFAULT '' NOT NULL
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'dispatcher', 4 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'dispatcher');

CREATE TABLE IF NOT EXISTS `load_balancer` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `group_id` INT(10) UNSIGNED DEFAULT 0 NOT NULL,
    `dst_uri` VARCHAR(128) NOT NULL,
    `resources` VARCHAR(255) NOT NULL,
    `probe_mode` INT(10) UNSIGNED DEFAULT 0 NOT NULL,
    `attrs` VARCHAR(255) DEFAULT NULL,
    `description` VARCHAR(128) DEFAULT NULL,
    KEY dsturi_idx (`dst_uri`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'load_balancer', 3 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'load_balancer');

CREATE TABLE IF NOT EXISTS `location` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `ruid` VARCHAR(64) DEFAULT '' NOT NULL,
    `username` VARCHAR(64) DEFAULT '' NOT NULL,
    `domain` VARCHAR(64) DEFAULT NULL,
    `contact` VARCHAR(512) DEFAULT '' NOT NULL,
    `received` VARCHAR(128) DEFAULT NULL,
    `path` VARCHAR(512) DEFAULT NULL,
    `expires` DATETIME DEFAULT '2030-05-28 21:32:15' NOT NULL,
    `q` FLOAT(10,2) DEFAULT 1.0 NOT NULL,
    `callid` VARCHAR(255) DEFAULT 'Default-Call-ID' NOT NULL,
    `cseq` INT(11) DEFAULT 1 NOT NULL,
    `last_modified` DATETIME DEFAULT '2000-01-01 00:00:01' NOT NULL,
    `flags` INT(11) DEFAULT 0 NOT NULL,
    `cflags` INT(11) DEFAULT 0 NOT NULL,
    `user_agent` VARCHAR(255) DEFAULT '' NOT NULL,
    `socket` VARCHAR(64) DEFAULT NULL,
    `methods` INT(11) DEFAULT NULL,
    `instance` VARCHAR(255) DEFAULT NULL,
    `reg_id` INT(11) DEFAULT 0 NOT NULL,
    `server_id` INT(11) DEFAULT 0 NOT NULL,
    `connection_id` INT(11) DEFAULT 0 NOT NULL,
    `keepalive` INT(11) DEFAULT 0 NOT NULL,
    `partition` INT(11) DEFAULT 0 NOT NULL,
    CONSTRAINT ruid_idx UNIQUE (`ruid`),
    KEY account_contact_idx (`username`, `domain`, `contact`),
    KEY expires_idx (`expires`),
    KEY tcpcon_idx (`connection_id`),
    KEY connection_idx (`server_id`, `connection_id`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'location', 9 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'location');

CREATE TABLE IF NOT EXISTS `subscriber` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `username` VARCHAR(64) DEFAULT '' NOT NULL,
    `domain` VARCHAR(64) DEFAULT '' NOT NULL,
    `password` VARCHAR(64) DEFAULT '' NOT NULL,
    `ha1` VARCHAR(128) DEFAULT '' NOT NULL,
    `ha1b` VARCHAR(128) DEFAULT '' NOT NULL,
    CONSTRAINT account_idx UNIQUE (`username`, `domain`),
    KEY username_idx (`username`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'subscriber', 7 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'subscriber');

CREATE TABLE IF NOT EXISTS `acc` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `method` VARCHAR(16) DEFAULT '' NOT NULL,
    `from_tag` VARCHAR(128) DEFAULT '' NOT NULL,
    `to_tag` VARCHAR(128) DEFAULT '' NOT NULL,
    `callid` VARCHAR(255) DEFAULT '' NOT NULL,
    `sip_code` VARCHAR(3) DEFAULT '' NOT NULL,
    `sip_reason` VARCHAR(128) DEFAULT '' NOT NULL,
    `time` DATETIME NOT NULL,
    `src_user` VARCHAR(64) DEFAULT '' NOT NULL,
    `src_domain` VARCHAR(128) DEFAULT '' NOT NULL,
    `src_ip` VARCHAR(64) DEFAULT '' NOT NULL,
    `dst_ouser` VARCHAR(64) DEFAULT '' NOT NULL,
    `dst_user` VARCHAR(64) DEFAULT '' NOT NULL,
    `dst_domain` VARCHAR(128) DEFAULT '' NOT NULL,
    KEY callid_idx (`callid`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'acc', 5 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'acc');

CREATE TABLE IF NOT EXISTS `acc_cdrs` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `start_time` DATETIME DEFAULT '2000-01-01 00:00:00' NOT NULL,
    `end_time` DATETIME DEFAULT '2000-01-01 00:00:00' NOT NULL,
    `duration` FLOAT(10,3) DEFAULT 0 NOT NULL,
    KEY start_time_idx (`start_time`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'acc_cdrs', 2 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'acc_cdrs');

CREATE TABLE IF NOT EXISTS `missed_calls` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `method` VARCHAR(16) DEFAULT '' NOT NULL,
    `from_tag` VARCHAR(128) DEFAULT '' NOT NULL,
    `to_tag` VARCHAR(128) DEFAULT '' NOT NULL,
    `callid` VARCHAR(255) DEFAULT '' NOT NULL,
    `sip_code` VARCHAR(3) DEFAULT '' NOT NULL,
    `sip_reason` VARCHAR(128) DEFAULT '' NOT NULL,
    `time` DATETIME NOT NULL,
    `src_user` VARCHAR(64) DEFAULT '' NOT NULL,
    `src_domain` VARCHAR(128) DEFAULT '' NOT NULL,
    `src_ip` VARCHAR(64) DEFAULT '' NOT NULL,
    `dst_ouser` VARCHAR(64) DEFAULT '' NOT NULL,
    `dst_user` VARCHAR(64) DEFAULT '' NOT NULL,
    `dst_domain` VARCHAR(128) DEFAULT '' NOT NULL,
    KEY callid_idx (`callid`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'missed_calls', 4 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'missed_calls');

CREATE TABLE IF NOT EXISTS `dialog` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `hash_entry` INT(10) UNSIGNED NOT NULL,
    `hash_id` INT(10) UNSIGNED NOT NULL,
    `callid` VARCHAR(255) NOT NULL,
    `from_uri` VARCHAR(255) NOT NULL,
    `from_tag` VARCHAR(128) NOT NULL,
    `to_uri` VARCHAR(255) NOT NULL,
    `to_tag` VARCHAR(128) NOT NULL,
    `caller_cseq` VARCHAR(20) NOT NULL,
    `callee_cseq` VARCHAR(20) NOT NULL,
    `caller_route_set` VARCHAR(512),
    `callee_route_set` VARCHAR(512),
    `caller_contact` VARCHAR(255) NOT NULL,
    `callee_contact` VARCHAR(255) NOT NULL,
    `caller_sock` VARCHAR(64) NOT NULL,
    `callee_sock` VARCHAR(64) NOT NULL,
    `state` INT(10) UNSIGNED NOT NULL,
    `start_time` INT(10) UNSIGNED NOT NULL,
    `timeout` INT(10) UNSIGNED DEFAULT 0 NOT NULL,
    `sflags` INT(10) UNSIGNED DEFAULT 0 NOT NULL,
    `iflags` INT(10) UNSIGNED DEFAULT 0 NOT NULL,
    `toroute_name` VARCHAR(32),
    `req_uri` VARCHAR(255) NOT NULL,
    `xdata` VARCHAR(512),
    KEY hash_idx (`hash_entry`, `hash_id`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'dialog', 7 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'dialog');

CREATE TABLE IF NOT EXISTS `dialog_vars` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `hash_entry` INT(10) UNSIGNED NOT NULL,
    `hash_id` INT(10) UNSIGNED NOT NULL,
    `dialog_key` VARCHAR(128) NOT NULL,
    `dialog_value` VARCHAR(512) NOT NULL,
    KEY hash_idx (`hash_entry`, `hash_id`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'dialog_vars', 1 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'dialog_vars');

CREATE TABLE IF NOT EXISTS `domain` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `domain` VARCHAR(64) NOT NULL,
    `did` VARCHAR(64) DEFAULT NULL,
    `last_modified` DATETIME DEFAULT '2000-01-01 00:00:01' NOT NULL,
    CONSTRAINT domain_idx UNIQUE (`domain`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'domain', 2 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'domain');

CREATE TABLE IF NOT EXISTS `dbaliases` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `alias_username` VARCHAR(64) DEFAULT '' NOT NULL,
    `alias_domain` VARCHAR(64) DEFAULT '' NOT NULL,
    `username` VARCHAR(64) DEFAULT '' NOT NULL,
    `domain` VARCHAR(64) DEFAULT '' NOT NULL,
    KEY alias_user_idx (`alias_username`),
    KEY alias_idx (`alias_username`, `alias_domain`),
    KEY target_idx (`username`, `domain`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'dbaliases', 1 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'dbaliases');

CREATE TABLE IF NOT EXISTS `dialplan` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `dpid` INT(11) NOT NULL,
    `pr` INT(11) NOT NULL,
    `match_op` INT(11) NOT NULL,
    `match_exp` VARCHAR(64) NOT NULL,
    `match_len` INT(11) NOT NULL,
    `subst_exp` VARCHAR(64) NOT NULL,
    `repl_exp` VARCHAR(64) NOT NULL,
    `attrs` VARCHAR(64) NOT NULL
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'dialplan', 2 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'dialplan');

CREATE TABLE IF NOT EXISTS `silo` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `src_addr` VARCHAR(128) DEFAULT '' NOT NULL,
    `dst_addr` VARCHAR(128) DEFAULT '' NOT NULL,
    `username` VARCHAR(64) DEFAULT '' NOT NULL,
    `domain` VARCHAR(64) DEFAULT '' NOT NULL,
    `inc_time` INT(11) DEFAULT 0 NOT NULL,
    `exp_time` INT(11) DEFAULT 0 NOT NULL,
    `snd_time` INT(11) DEFAULT 0 NOT NULL,
    `ctype` VARCHAR(32) DEFAULT 'text/plain' NOT NULL,
    `body` BLOB,
    `extra_hdrs` TEXT,
    `callid` VARCHAR(128) DEFAULT '' NOT NULL,
    `status` INT(11) DEFAULT 0 NOT NULL,
    KEY account_idx (`username`, `domain`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'silo', 8 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'silo');

CREATE TABLE IF NOT EXISTS `presentity` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `username` VARCHAR(64) NOT NULL,
    `domain` VARCHAR(64) NOT NULL,
    `event` VARCHAR(64) NOT NULL,
    `etag` VARCHAR(128) NOT NULL,
    `expires` INT(11) NOT NULL,
    `received_time` INT(11) NOT NULL,
    `body` BLOB NOT NULL,
    `sender` VARCHAR(255) NOT NULL,
    `priority` INT(11) DEFAULT 0 NOT NULL,
    `ruid` VARCHAR(64),
    CONSTRAINT presentity_idx UNIQUE (`username`, `domain`, `event`, `etag`),
    CONSTRAINT ruid_idx UNIQUE (`ruid`),
    KEY presentity_expires (`expires`),
    KEY account_idx (`username`, `domain`, `event`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'presentity', 5 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'presentity');

CREATE TABLE IF NOT EXISTS `active_watchers` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `presentity_uri` VARCHAR(255) NOT NULL,
    `watcher_username` VARCHAR(64) NOT NULL,
    `watcher_domain` VARCHAR(64) NOT NULL,
    `to_user` VARCHAR(64) NOT NULL,
    `to_domain` VARCHAR(64) NOT NULL,
    `event` VARCHAR(64) DEFAULT 'presence' NOT NULL,
    `event_id` VARCHAR(64),
    `to_tag` VARCHAR(128) NOT NULL,
    `from_tag` VARCHAR(128) NOT NULL,
    `callid` VARCHAR(255) NOT NULL,
    `local_cseq` INT(11) NOT NULL,
    `remote_cseq` INT(11) NOT NULL,
    `contact` VARCHAR(255) NOT NULL,
    `record_route` TEXT,
    `expires` INT(11) NOT NULL,
    `status` INT(11) DEFAULT 2 NOT NULL,
    `reason` VARCHAR(64),
    `version` INT(11) DEFAULT 0 NOT NULL,
    `socket_info` VARCHAR(64) NOT NULL,
    `local_contact` VARCHAR(255) NOT NULL,
    `from_user` VARCHAR(64) NOT NULL,
    `from_domain` VARCHAR(64) NOT NULL,
    `updated` INT(11) NOT NULL,
    `updated_winfo` INT(11) NOT NULL,
    `flags` INT(11) DEFAULT 0 NOT NULL,
    `user_agent` VARCHAR(255) DEFAULT '',
    CONSTRAINT active_watchers_idx UNIQUE (`callid`, `to_tag`, `from_tag`),
    KEY active_watchers_expires (`expires`),
    KEY active_watchers_pres (`presentity_uri`, `event`),
    KEY updated_idx (`updated`),
    KEY updated_winfo_idx (`updated_winfo`, `presentity_uri`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'active_watchers', 12 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'active_watchers');

CREATE TABLE IF NOT EXISTS `watchers` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `presentity_uri` VARCHAR(255) NOT NULL,
    `watcher_username` VARCHAR(64) NOT NULL,
    `watcher_domain` VARCHAR(64) NOT NULL,
    `event` VARCHAR(64) DEFAULT 'presence' NOT NULL,
    `status` INT(11) NOT NULL,
    `reason` VARCHAR(64),
    `inserted_time` INT(11) NOT NULL,
    CONSTRAINT watcher_idx UNIQUE (`presentity_uri`, `watcher_username`, `watcher_domain`, `event`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'watchers', 3 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'watchers');

CREATE TABLE IF NOT EXISTS `xcap` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `username` VARCHAR(64) NOT NULL,
    `domain` VARCHAR(64) NOT NULL,
    `doc` BLOB NOT NULL,
    `doc_type` INT(11) NOT NULL,
    `etag` VARCHAR(128) NOT NULL,
    `source` INT(11) NOT NULL,
    `doc_uri` VARCHAR(255) NOT NULL,
    `port` INT(11) NOT NULL,
    CONSTRAINT doc_uri_idx UNIQUE (`doc_uri`),
    KEY account_doc_type_idx (`username`, `domain`, `doc_type`),
    KEY account_doc_type_uri_idx (`username`, `domain`, `doc_type`, `doc_uri`),
    KEY account_doc_uri_idx (`username`, `domain`, `doc_uri`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'xcap', 4 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'xcap');

CREATE TABLE IF NOT EXISTS `dr_gateways` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `gwid` VARCHAR(64) NOT NULL,
    `type` INT(10) UNSIGNED DEFAULT 0 NOT NULL,
    `address` VARCHAR(128) NOT NULL,
    `strip` INT(10) UNSIGNED DEFAULT 0 NOT NULL,
    `pri_prefix` VARCHAR(16) DEFAULT NULL,
    `attrs` VARCHAR(255) DEFAULT NULL,
    `probe_mode` INT(10) UNSIGNED DEFAULT 0 NOT NULL,
    `state` INT(10) UNSIGNED DEFAULT 0 NOT NULL,
    `socket` VARCHAR(128) DEFAULT NULL,
    `description` VARCHAR(128) DEFAULT NULL,
    CONSTRAINT dr_gw_idx UNIQUE (`gwid`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'dr_gateways', 6 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'dr_gateways');

CREATE TABLE IF NOT EXISTS `dr_rules` (
    `ruleid` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `groupid` VARCHAR(255) NOT NULL,
    `prefix` VARCHAR(64) NOT NULL,
    `timerec` VARCHAR(255) DEFAULT NULL,
    `priority` INT(11) DEFAULT 0 NOT NULL,
    `routeid` VARCHAR(255) DEFAULT NULL,
    `gwlist` VARCHAR(255) NOT NULL,
    `sort_alg` VARCHAR(1) DEFAULT 'N' NOT NULL,
    `sort_profile` INT(10) UNSIGNED DEFAULT NULL,
    `attrs` VARCHAR(255) DEFAULT NULL,
    `description` VARCHAR(128) DEFAULT NULL
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'dr_rules', 4 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'dr_rules');

CREATE TABLE IF NOT EXISTS `dr_carriers` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `carrierid` VARCHAR(64) NOT NULL,
    `gwlist` VARCHAR(255) NOT NULL,
    `flags` INT(10) UNSIGNED DEFAULT 0 NOT NULL,
    `sort_alg` VARCHAR(1) DEFAULT 'N' NOT NULL,
    `state` INT(10) UNSIGNED DEFAULT 0 NOT NULL,
    `attrs` VARCHAR(255) DEFAULT NULL,
    `description` VARCHAR(128) DEFAULT NULL,
    CONSTRAINT dr_carrier_idx UNIQUE (`carrierid`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'dr_carriers', 3 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'dr_carriers');

CREATE TABLE IF NOT EXISTS `dr_groups` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `username` VARCHAR(64) NOT NULL,
    `domain` VARCHAR(128) DEFAULT NULL,
    `groupid` INT(10) UNSIGNED DEFAULT 0 NOT NULL,
    `description` VARCHAR(128) DEFAULT NULL
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'dr_groups', 2 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'dr_groups');

CREATE TABLE IF NOT EXISTS `cdrs` (
    `cdr_id` BIGINT(20) AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `start_time` DATETIME DEFAULT '2000-01-01 00:00:00' NOT NULL,
    `end_time` DATETIME DEFAULT '2000-01-01 00:00:00' NOT NULL,
    `duration` FLOAT(10,3) DEFAULT 0 NOT NULL,
    `setuptime` INT(10) UNSIGNED DEFAULT 0 NOT NULL,
    `callid` VARCHAR(255) DEFAULT '' NOT NULL,
    `from_tag` VARCHAR(128) DEFAULT '' NOT NULL,
    `to_tag` VARCHAR(128) DEFAULT '' NOT NULL,
    `src_user` VARCHAR(64) DEFAULT '' NOT NULL,
    `src_domain` VARCHAR(128) DEFAULT '' NOT NULL,
    `src_ip` VARCHAR(64) DEFAULT '' NOT NULL,
    `dst_ouser` VARCHAR(64) DEFAULT '' NOT NULL,
    `dst_user` VARCHAR(64) DEFAULT '' NOT NULL,
    `dst_domain` VARCHAR(128) DEFAULT '' NOT NULL,
    `sip_code` VARCHAR(3) DEFAULT '' NOT NULL,
    `sip_reason` VARCHAR(128) DEFAULT '' NOT NULL,
    CONSTRAINT uk_cft UNIQUE (`callid`, `from_tag`, `to_tag`),
    KEY start_time_idx (`start_time`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'cdrs', 1 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'cdrs');

CREATE TABLE IF NOT EXISTS `sipdisp_batches` (
    `token` VARCHAR(64) NOT NULL,
    `created` DATETIME DEFAULT '2000-01-01 00:00:00' NOT NULL,
    CONSTRAINT token_idx UNIQUE (`token`)
);

INSERT INTO `version` (`table_name`, `table_version`) SELECT 'sipdisp_batches', 1 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM `version` WHERE `table_name` = 'sipdisp_batches');

