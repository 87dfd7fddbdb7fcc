BEGIN TRANSACTION;
CREATE TABLE co2_bins (
    unit_id  TEXT NOT NULL,
    bucket   INTEGER NOT NULL,  -- unixepoch(date || ' ' || time) / 10800
    co2_sum  REAL NOT NULL,
    co2_n    INTEGER NOT NULL,
    temp_sum REAL NOT NULL,
    temp_n   INTEGER NOT NULL,
    PRIMARY KEY (unit_id, bucket)
) WITHOUT ROWID;
INSERT INTO "co2_bins" VALUES('co2unit-0123456789ab',166068,7000.0,10,4.5,1);
INSERT INTO "co2_bins" VALUES('co2unit-0123456789ab',166076,7000.0,10,4.5,1);
INSERT INTO "co2_bins" VALUES('co2unit-0123456789ab',166084,7000.0,10,4.5,1);
INSERT INTO "co2_bins" VALUES('co2unit-30aea42a50bc',166060,7000.0,10,4.5,1);
INSERT INTO "co2_bins" VALUES('co2unit-30aea42a50bc',166063,7000.0,10,5.0,1);
INSERT INTO "co2_bins" VALUES('co2unit-30aea42a50bc',166067,14000.0,20,9.0,2);
INSERT INTO "co2_bins" VALUES('co2unit-30aea42a50bc',166068,27280.0,39,9.0,2);
INSERT INTO "co2_bins" VALUES('co2unit-30aea42a50bc',166069,21000.0,30,15.5,3);
INSERT INTO "co2_bins" VALUES('co2unit-30aea42a50bc',166070,21000.0,30,15.0,3);
INSERT INTO "co2_bins" VALUES('co2unit-30aea42a50bc',166071,14000.0,20,9.0,2);
INSERT INTO "co2_bins" VALUES('co2unit-cccccccccccc',166064,21000.0,30,63.0,3);
INSERT INTO "co2_bins" VALUES('co2unit-cccccccccccc',166065,21000.0,30,63.0,3);
INSERT INTO "co2_bins" VALUES('co2unit-cccccccccccc',166072,21000.0,30,63.0,3);
INSERT INTO "co2_bins" VALUES('co2unit-cccccccccccc',166073,21000.0,30,63.0,3);
CREATE TABLE co2_readings (
    unit_id     TEXT NOT NULL,
    nickname    TEXT,
    date        TEXT NOT NULL,
    time        TEXT NOT NULL,
    temp        REAL,
    flash_count INTEGER,
    co2_01      INTEGER,
    co2_02      INTEGER,
    co2_03      INTEGER,
    co2_04      INTEGER,
    co2_05      INTEGER,
    co2_06      INTEGER,
    co2_07      INTEGER,
    co2_08      INTEGER,
    co2_09      INTEGER,
    co2_10      INTEGER,
    src_file    INTEGER NOT NULL,  -- import_files.id: where the row came from
    src_line    INTEGER NOT NULL,  -- 1-based line number in that file
    -- Firmware from 2020-01-14 on appends the ExplorIR sensor's raw multi-field read (Z, d, o,
    -- h, v); NULL for 16-field rows and where the read failed. Added by schema version 2.
    raw_co2_filtered   INTEGER,
    raw_led_normalized INTEGER,
    raw_led_signal     INTEGER,
    raw_zero_point     INTEGER,
    raw_sensor_temp    INTEGER
);
INSERT INTO "co2_readings" VALUES('co2unit-0123456789ab','varanger-04','2026-11-01','12:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,1,1,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "co2_readings" VALUES('co2unit-0123456789ab','varanger-04','2026-11-02','12:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,1,2,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "co2_readings" VALUES('co2unit-0123456789ab','varanger-04','2026-11-03','12:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,1,3,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','10:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,2,1,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','11:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,2,2,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','12:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,2,3,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','13:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,2,4,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc',NULL,'2026-11-01','14:00:10',NULL,1,700,700,700,700,700,700,700,700,700,700,2,7,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','14:30:10',NULL,1,680,NULL,700,700,700,700,700,700,700,700,2,8,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','15:30:10',5.5,1,700,700,700,700,700,700,700,700,700,700,2,9,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','16:00:10',5.0,1,700,700,700,700,700,700,700,700,700,700,2,11,45,34986,28228,32626,1101);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','17:00:10',5.0,1,700,700,700,700,700,700,700,700,700,700,2,12,45,34986,28228,32626,1101);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','18:00:10',5.0,1,700,700,700,700,700,700,700,700,700,700,2,13,45,34986,28228,32626,1101);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','19:00:10',5.0,1,700,700,700,700,700,700,700,700,700,700,2,14,45,34986,28228,32626,1101);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','20:00:10',5.0,1,700,700,700,700,700,700,700,700,700,700,2,15,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','21:30:10',4.5,1,700,700,700,700,700,700,700,700,700,700,2,17,45,34986,28228,32626,1101);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','22:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,2,18,45,34986,28228,32626,1101);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-10-31','12:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,3,1,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-10-31','23:00:10',5.0,1,700,700,700,700,700,700,700,700,700,700,3,4,45,34986,28228,32626,1101);
INSERT INTO "co2_readings" VALUES('co2unit-cccccccccccc','lab-7','2026-11-01','00:00:10',21.0,1,700,700,700,700,700,700,700,700,700,700,4,1,40,34986,28228,32626,1100);
INSERT INTO "co2_readings" VALUES('co2unit-cccccccccccc','lab-7','2026-11-01','01:00:10',21.0,1,700,700,700,700,700,700,700,700,700,700,4,2,41,34986,28228,32626,1101);
INSERT INTO "co2_readings" VALUES('co2unit-cccccccccccc','lab-7','2026-11-01','02:00:10',21.0,1,700,700,700,700,700,700,700,700,700,700,4,3,42,34986,28228,32626,1102);
INSERT INTO "co2_readings" VALUES('co2unit-cccccccccccc','lab-7','2026-11-01','03:00:10',21.0,1,700,700,700,700,700,700,700,700,700,700,4,4,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "co2_readings" VALUES('co2unit-cccccccccccc','lab-7','2026-11-01','04:00:10',21.0,1,700,700,700,700,700,700,700,700,700,700,4,5,44,34986,28228,32626,1104);
INSERT INTO "co2_readings" VALUES('co2unit-cccccccccccc','lab-7','2026-11-01','05:00:10',21.0,1,700,700,700,700,700,700,700,700,700,700,4,6,45,34986,28228,32626,1105);
INSERT INTO "co2_readings" VALUES('co2unit-cccccccccccc','lab-7','2026-11-02','00:00:10',21.0,1,700,700,700,700,700,700,700,700,700,700,5,1,40,34986,28228,32626,1100);
INSERT INTO "co2_readings" VALUES('co2unit-cccccccccccc','lab-7','2026-11-02','01:00:10',21.0,1,700,700,700,700,700,700,700,700,700,700,5,2,41,34986,28228,32626,1101);
INSERT INTO "co2_readings" VALUES('co2unit-cccccccccccc','lab-7','2026-11-02','02:00:10',21.0,1,700,700,700,700,700,700,700,700,700,700,5,3,42,34986,28228,32626,1102);
INSERT INTO "co2_readings" VALUES('co2unit-cccccccccccc','lab-7','2026-11-02','03:00:10',21.0,1,700,700,700,700,700,700,700,700,700,700,5,4,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "co2_readings" VALUES('co2unit-cccccccccccc','lab-7','2026-11-02','04:00:10',21.0,1,700,700,700,700,700,700,700,700,700,700,5,5,44,34986,28228,32626,1104);
INSERT INTO "co2_readings" VALUES('co2unit-cccccccccccc','lab-7','2026-11-02','05:00:10',21.0,1,700,700,700,700,700,700,700,700,700,700,5,6,45,34986,28228,32626,1105);
CREATE TABLE data_quality (
    unit_id          TEXT PRIMARY KEY,
    rows_imported    INTEGER NOT NULL,  -- rows of co2_readings
    rows_dropped     INTEGER NOT NULL,  -- lines of its readings files the import dropped
    lost_share       REAL NOT NULL,     -- rows_dropped / (rows_imported + rows_dropped)
    first_reading    TEXT,              -- 'YYYY-MM-DD HH:MM:SS' UTC
    last_reading     TEXT,
    days_deployed    REAL,              -- in its `deployed` periods up to computed_at
    days_with_data   INTEGER,           -- UTC days with a reading (in those periods, if any)
    longest_gap_days REAL,              -- between readings and the periods' ends, if deployed
    gap_from         TEXT,
    gap_to           TEXT,
    computed_at      TEXT NOT NULL
);
INSERT INTO "data_quality" VALUES('co2unit-0123456789ab',3,0,0.0,'2026-11-01 12:00:10','2026-11-03 12:00:10',39.120625,3,3.46205092592592578171e+01,'2026-11-03 12:00:10','2026-12-08 02:53:42','2026-12-08 02:53:42');
INSERT INTO "data_quality" VALUES('co2unit-30aea42a50bc',16,3,1.57894736842105254392e-01,'2026-10-31 12:00:10','2026-11-01 22:00:10',6.0,2,3.08321759259259264851e+00,'2026-11-01 22:00:10','2026-11-05 00:00:00','2026-12-08 02:53:42');
INSERT INTO "data_quality" VALUES('co2unit-cccccccccccc',12,0,0.0,'2026-11-01 00:00:10','2026-11-02 05:00:10',NULL,2,7.91666666666666629659e-01,'2026-11-01 05:00:10','2026-11-02 00:00:10','2026-12-08 02:53:42');
CREATE TABLE deploy_durations_tiered (
    unit_id  TEXT,
    nickname TEXT,
    site     TEXT,
    tier     INTEGER,
    status   TEXT,
    start_ts TEXT,  -- UTC, 'YYYY-MM-DD HH:MM:SS'; a bare date means its midnight
    end_ts   TEXT,
    note     TEXT
);
INSERT INTO "deploy_durations_tiered" VALUES('co2unit-30aea42a50bc','varanger-03','vj_re_sn_4',3,'deployed','2026-10-30 00:00:00','2026-11-05 00:00:00',NULL);
INSERT INTO "deploy_durations_tiered" VALUES('co2unit-0123456789ab','varanger-04','vj_re_sn_4',3,'deployed','2026-10-30 00:00:00',NULL,NULL);
INSERT INTO "deploy_durations_tiered" VALUES('co2unit-cccccccccccc','lab-7','lab',1,'lab_check','2026-11-01 00:00:00',NULL,NULL);
CREATE TABLE dropped_lines (
    src_file INTEGER NOT NULL,
    src_line INTEGER NOT NULL,
    reason   TEXT NOT NULL,
    content  TEXT NOT NULL  -- repr() of the start of the line
);
INSERT INTO "dropped_lines" VALUES(2,5,'dropped: date before 2011 (clock not set)','''co2unit-30aea42a50bc\tvaranger-03\t1970-01-01\t00:00:42\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700''');
INSERT INTO "dropped_lines" VALUES(2,6,'dropped: not a co2unit- line','''test\t1\t2\t3''');
INSERT INTO "dropped_lines" VALUES(2,9,'recovered: row cut off','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t15:0''');
INSERT INTO "dropped_lines" VALUES(2,16,'dropped: wrong field count','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t20:30:10\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t45\t1''');
INSERT INTO "dropped_lines" VALUES(2,17,'recovered: row cut off','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t21:00:10\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700''');
INSERT INTO "dropped_lines" VALUES(2,18,'recovered: non-printing bytes before a row','''\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00''');
INSERT INTO "dropped_lines" VALUES(8,4,'dropped: wrong field count','''not a ping line''');
INSERT INTO "dropped_lines" VALUES(14,5,'dropped: tier is not an integer','''co2unit-cccccccccccc\tlab-7\tlab\tnot-a-tier\tdeployed\t2026-11-02\t\t''');
CREATE TABLE error_logs (
    unit_id  TEXT NOT NULL,
    idate    TEXT,  -- inferred: odate, or the last good date before a 1970-01-01 entry
    itime    TEXT,
    etype    TEXT,  -- uncaught, watchdog, signal, backoff, transmit, or NULL
    odate    TEXT,  -- as written in the headline
    otime    TEXT,
    level    TEXT,
    message  TEXT,  -- headline message and its continuation lines (tracebacks)
    src_file INTEGER NOT NULL,
    src_line INTEGER NOT NULL,
    UNIQUE (src_file, src_line)
);
INSERT INTO "error_logs" VALUES('co2unit-30aea42a50bc','2026-10-25','03:11:24','transmit','2026-10-25','03:11:24','INFO','transmitting',6,1);
INSERT INTO "error_logs" VALUES('co2unit-30aea42a50bc','2026-10-25','03:12:00','uncaught','2026-10-25','03:12:00','EXC','Uncaught exception
Traceback (most recent call last):
  File "main.py", line 10, in <module>
OSError: [Errno 113] EHOSTUNREACH',6,2);
INSERT INTO "error_logs" VALUES('co2unit-30aea42a50bc','2026-10-25','03:12:00','watchdog','1970-01-01','00:00:12','WARN','watchdog reset',6,6);
INSERT INTO "error_logs" VALUES('co2unit-30aea42a50bc','2026-10-26','03:10:00','backoff','2026-10-26','03:10:00','WARN','LTE backoff 600 s',6,7);
INSERT INTO "error_logs" VALUES('co2unit-30aea42a50bc','2026-10-26','03:10:00',NULL,NULL,NULL,NULL,'  a continuation of the last entry of errors-0000',7,1);
INSERT INTO "error_logs" VALUES('co2unit-30aea42a50bc','2026-10-26','03:10:00','signal','1970-01-01','00:00:15','INFO','Signal quality 18',7,2);
CREATE TABLE gateway_receipts (
    source      TEXT PRIMARY KEY,  -- as measurements.source
    device      TEXT NOT NULL,
    family      TEXT NOT NULL,
    ts          TEXT NOT NULL,     -- UTC receive (or answer) time
    verdict     TEXT NOT NULL,     -- ok | partial | unknown | bad | failed (see rawlog.Verdict)
    stored      INTEGER NOT NULL,  -- values stored from it (a resend's repeats excluded)
    expected_s  REAL,              -- seconds until the device's next packet or poll is due
    detail      TEXT               -- why it is not ok
) WITHOUT ROWID;
INSERT INTO "gateway_receipts" VALUES('pull/lab-1/0000.log:1','lab-1','pull','2026-11-01T00:00:00.000000','ok',3,NULL,NULL);
INSERT INTO "gateway_receipts" VALUES('pull/lab-1/0000.log:2','lab-1','pull','2026-11-01T00:01:00.000000','bad',0,NULL,'HTTP 500');
INSERT INTO "gateway_receipts" VALUES('tcp/esp8266-1/0000.log:1','esp8266-1','tcp','2026-11-01T00:00:00.000000','ok',6,3600.0,NULL);
INSERT INTO "gateway_receipts" VALUES('tcp/esp8266-1/0000.log:2','esp8266-1','tcp','2026-11-01T01:00:00.000000','ok',3,3600.0,'resent: its first 2 records repeat the previous packet');
INSERT INTO "gateway_receipts" VALUES('tcp/esp8266-1/0001.log:1','esp8266-1','tcp','2026-11-01T01:00:09.000000','bad',0,NULL,'the device did not close the connection in time; 1 bytes: shorter than the 9-byte header');
INSERT INTO "gateway_receipts" VALUES('tcp/esp8266-1/0001.log:2','esp8266-1','tcp','2026-11-01T02:00:00.000000','ok',3,3600.0,NULL);
INSERT INTO "gateway_receipts" VALUES('ws/phone-1/0000.log:1','phone-1','ws','2026-11-01T00:00:00.000000','ok',2,NULL,'seq 0');
INSERT INTO "gateway_receipts" VALUES('ws/phone-1/0000.log:2','phone-1','ws','2026-11-01T00:00:01.000000','ok',1,NULL,'seq 1');
CREATE TABLE import_files (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL,     -- readings, errors, pings, measurements, deployments
    path       TEXT NOT NULL UNIQUE,  -- relative to its root: data:<rel> or db:<rel>
    size       INTEGER NOT NULL,  -- stat seen at the last import
    mtime_ns   INTEGER NOT NULL,
    inode      INTEGER NOT NULL,
    check_hash TEXT NOT NULL,     -- of the first and the last imported bytes: spots a replacement
    bytes_done INTEGER NOT NULL,  -- complete lines imported up to here
    lines_done INTEGER NOT NULL,
    carry      TEXT               -- parser state carried on (error logs: last good date;
                                  -- TCP raw logs: the device's History as JSON)
);
INSERT INTO "import_files" VALUES(1,'readings','data:co2unit-0123456789ab/data/readings/readings-0000.tsv',297,1796698421981202102,2286453,'2bc7822628bae9d2c27cbf211f7b287f6c40cbf5',297,3,NULL);
INSERT INTO "import_files" VALUES(2,'readings','data:co2unit-30aea42a50bc/data/readings/readings-0000.tsv',1934,1796698421980149718,2286444,'3964a919c2c888c3f95459b9893f0ec5e6d775c8',1934,18,NULL);
INSERT INTO "import_files" VALUES(3,'readings','data:co2unit-30aea42a50bc/superseded/20261102T000000.000000Z/data/readings/readings-0000.tsv',448,1796698421980704378,2286449,'94b30915be7e45856dc093a3a9d8e23594ba2483',448,4,NULL);
INSERT INTO "import_files" VALUES(4,'readings','data:co2unit-cccccccccccc/data/readings/readings-0000.tsv',719,1796698421981685929,2286457,'255a4889aae01c0e418d140fdfdfdad9f5e58bdc',719,6,NULL);
INSERT INTO "import_files" VALUES(5,'readings','data:co2unit-cccccccccccc/data/readings/readings-0001.tsv',719,1796698421981882247,2286458,'daf8538a8798826913c232d7224b3fc8f9fc54f3',719,6,NULL);
INSERT INTO "import_files" VALUES(6,'errors','data:co2unit-30aea42a50bc/errors/errors-0000.txt',324,1796698421982098693,2286460,'2c3d1bd7e142669a34bb0641bedbcccf2fb42dc3',274,6,'2026-10-26 03:10:00');
INSERT INTO "import_files" VALUES(7,'errors','data:co2unit-30aea42a50bc/errors/errors-0001.txt',100,1796698421982252772,2286461,'cb4f33638533f74b26acb7d1757ca98e624bf950',50,1,'2026-10-26 03:10:00');
INSERT INTO "import_files" VALUES(8,'pings','db:pings/pings-0000.tsv',206,1796698421982482603,2286464,'c751d8b6ae893b78f77658e226000b3f3ad8756a',206,4,NULL);
INSERT INTO "import_files" VALUES(9,'pings','data:otherserver/var/pings/pings-0000.tsv',129,1796698421982787996,2286468,'b5700511c9a4067b6110c2b3fc002e5541eab0dd',129,2,NULL);
INSERT INTO "import_files" VALUES(10,'measurements','data:tcp/esp8266-1/0000.log',206,1796698421983197273,2286473,'92fa50aea460c3607a54da3ea45e56623c4ba805',206,2,'{"received_us": 1793494800000000, "records": ["d204ec7c9463", "dc04207da463", "1405007d0064"]}');
INSERT INTO "import_files" VALUES(11,'measurements','data:tcp/esp8266-1/0001.log',146,1796698421983310145,2286474,'47459eb0187a25fc4545fec4142c70555a35c872',146,2,'{"received_us": 1793498400000000, "records": ["1e05107d1064"]}');
INSERT INTO "import_files" VALUES(12,'measurements','data:pull/lab-1/0000.log',252,1796698421983529877,2286477,'4f008e085ccd939130350b8747adfdd9f6ba29e1',252,2,NULL);
INSERT INTO "import_files" VALUES(13,'measurements','data:ws/phone-1/0000.log',466,1796698421983760800,2286480,'7fd265a8155634415c829dbf0745802cbfa13c08',466,2,NULL);
INSERT INTO "import_files" VALUES(14,'deployments','file:/tmp/tmpd09_1473/tree/remote_data/manual/deploy_durations_tiered.tsv',321,1796698421982940732,2286470,'739c6d7c39d26fc6b912a4ad8f3b31aa3f5e6848',321,5,NULL);
CREATE TABLE import_log (
    run_ts  TEXT NOT NULL,
    stage   TEXT NOT NULL,  -- readings, pings, errors, measurements, deployments
    -- imported, duplicate, recovered, dropped, nulled, updated, inferred, noted, deleted,
    -- binned, files
    outcome TEXT NOT NULL,
    reason  TEXT NOT NULL,
    count   INTEGER NOT NULL
);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','readings','binned','rows added to co2_bins',31);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','readings','dropped','date before 2011 (clock not set)',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','readings','dropped','not a co2unit- line',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','readings','dropped','wrong field count',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','readings','duplicate','same unit, date and time',2);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','readings','imported','rows',31);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','readings','noted','blank line',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','readings','nulled','empty field',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','readings','nulled','nickname ending in NICK',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','readings','nulled','truncated field',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','readings','recovered','non-printing bytes before a row',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','readings','recovered','row cut off',2);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','readings','files','read',5);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','readings','files','replaced or gone',0);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','errors','imported','entries',6);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','errors','inferred','date from the last good entry',2);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','errors','nulled','continuation lines without a headline',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','errors','files','read',2);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','errors','files','replaced or gone',0);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','pings','dropped','wrong field count',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','pings','duplicate','already in pings (live from the server, or another log)',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','pings','imported','rows',4);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','pings','files','read',2);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','pings','files','replaced or gone',0);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','measurements','imported','measurements',18);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','measurements','imported','receipts',8);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','measurements','imported','sessions',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','measurements','noted','bad receipts',2);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','measurements','files','read',4);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','measurements','files','replaced or gone',0);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','deployments','dropped','tier is not an integer',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','deployments','imported','rows',3);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','deployments','files','read',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:42','deployments','files','replaced or gone',0);
CREATE TABLE measurements (
    device TEXT NOT NULL,   -- esp8266-<deviceID>, or the polled device's configured name
    family TEXT NOT NULL,   -- tcp | pull | ws
    ts     TEXT NOT NULL,   -- UTC 'YYYY-MM-DDTHH:MM:SS.ffffff'
    name   TEXT NOT NULL,   -- light, humidity, temperature; mq135.co2, bmp180.pressure, ...
    value  REAL NOT NULL,
    source TEXT NOT NULL,   -- raw log line: '<family>/<device>/<NNNN>.log:<line>'
    session TEXT,           -- the streaming session it was received in (ws), else NULL
    -- By time within a device: what the readers range over, and where a device's new values
    -- go (at its end); no second index to keep up at every insert.
    PRIMARY KEY (device, ts, name)
) WITHOUT ROWID;
INSERT INTO "measurements" VALUES('esp8266-1','tcp','2026-10-31T23:56:00.000000','humidity',5.49970092773437500008e+01,'tcp/esp8266-1/0000.log:1',NULL);
INSERT INTO "measurements" VALUES('esp8266-1','tcp','2026-10-31T23:56:00.000000','light',1234.0,'tcp/esp8266-1/0000.log:1',NULL);
INSERT INTO "measurements" VALUES('esp8266-1','tcp','2026-10-31T23:56:00.000000','temperature',2.15010473632812519899e+01,'tcp/esp8266-1/0000.log:1',NULL);
INSERT INTO "measurements" VALUES('esp8266-1','tcp','2026-10-31T23:58:00.000000','humidity',55.09619140625,'tcp/esp8266-1/0000.log:1',NULL);
INSERT INTO "measurements" VALUES('esp8266-1','tcp','2026-10-31T23:58:00.000000','light',1244.0,'tcp/esp8266-1/0000.log:1',NULL);
INSERT INTO "measurements" VALUES('esp8266-1','tcp','2026-10-31T23:58:00.000000','temperature',2.15439477539062451683e+01,'tcp/esp8266-1/0000.log:1',NULL);
INSERT INTO "measurements" VALUES('esp8266-1','tcp','2026-11-01T00:00:00.000000','humidity',55.03515625,'tcp/esp8266-1/0000.log:2',NULL);
INSERT INTO "measurements" VALUES('esp8266-1','tcp','2026-11-01T00:00:00.000000','light',1300.0,'tcp/esp8266-1/0000.log:2',NULL);
INSERT INTO "measurements" VALUES('esp8266-1','tcp','2026-11-01T00:00:00.000000','temperature',21.790625,'tcp/esp8266-1/0000.log:2',NULL);
INSERT INTO "measurements" VALUES('esp8266-1','tcp','2026-11-01T01:00:00.000000','humidity',55.065673828125,'tcp/esp8266-1/0001.log:2',NULL);
INSERT INTO "measurements" VALUES('esp8266-1','tcp','2026-11-01T01:00:00.000000','light',1310.0,'tcp/esp8266-1/0001.log:2',NULL);
INSERT INTO "measurements" VALUES('esp8266-1','tcp','2026-11-01T01:00:00.000000','temperature',2.18335253906249917568e+01,'tcp/esp8266-1/0001.log:2',NULL);
INSERT INTO "measurements" VALUES('lab-1','pull','2026-11-01T00:00:00.000000','dht22.humidity',47.3,'pull/lab-1/0000.log:1',NULL);
INSERT INTO "measurements" VALUES('lab-1','pull','2026-11-01T00:00:00.000000','dht22.temperature',27.9,'pull/lab-1/0000.log:1',NULL);
INSERT INTO "measurements" VALUES('lab-1','pull','2026-11-01T00:00:00.000000','mq135.co2',402.08,'pull/lab-1/0000.log:1',NULL);
INSERT INTO "measurements" VALUES('phone-1','ws','2026-11-01T00:00:00.000000','co2',415.5,'ws/phone-1/0000.log:1',NULL);
INSERT INTO "measurements" VALUES('phone-1','ws','2026-11-01T00:00:00.000000','rh',40.0,'ws/phone-1/0000.log:1',NULL);
INSERT INTO "measurements" VALUES('phone-1','ws','2026-11-01T00:00:01.000000','co2',420.0,'ws/phone-1/0000.log:2','s-20261101T000000Z');
CREATE TABLE pings (
    ping_ts   TEXT NOT NULL,
    ping_date TEXT NOT NULL,
    ping_time TEXT NOT NULL,
    unit_id   TEXT NOT NULL,
    nickname  TEXT,
    rssi_raw  INTEGER,
    rssi_dbm  INTEGER,
    ber_raw   INTEGER
);
INSERT INTO "pings" VALUES('2026-11-01T03:10:05.123456','2026-11-01','03:10:05','co2unit-30aea42a50bc','varanger-03',18,-77,99);
INSERT INTO "pings" VALUES('2026-11-01T03:11:00.000000','2026-11-01','03:11:00','co2unit-0123456789ab',NULL,NULL,NULL,NULL);
INSERT INTO "pings" VALUES('2026-11-02T03:11:00.000001','2026-11-02','03:11:00','co2unit-cccccccccccc','lab-7',20,-73,99);
INSERT INTO "pings" VALUES('2026-11-02T03:12:00.500000','2026-11-02','03:12:00','co2unit-0123456789ab',NULL,9,-95,NULL);
CREATE TABLE push_daily (
    unit_id         TEXT NOT NULL,
    day             TEXT NOT NULL,     -- 'YYYY-MM-DD' the chunks arrived (UTC)
    bytes           INTEGER NOT NULL,  -- new bytes stored (a re-sent chunk adds nothing)
    chunks          INTEGER NOT NULL,  -- chunks acknowledged
    error_entries   INTEGER NOT NULL,  -- error-log entries (`----- ` headlines) received
    last_push_ts    TEXT NOT NULL,     -- UTC, the day's last acknowledged chunk
    last_reading_ts TEXT,              -- 'YYYY-MM-DD HH:MM:SS', the newest reading received
    PRIMARY KEY (unit_id, day)
) WITHOUT ROWID;
CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,  -- s-20261206T015211Z, or s-20261206T015211Z-<name slug>
    name       TEXT,              -- as the admin gave it, if any
    started_at TEXT NOT NULL,     -- UTC 'YYYY-MM-DDTHH:MM:SS.ffffff'
    stopped_at TEXT               -- UTC; NULL while it runs
) WITHOUT ROWID;
INSERT INTO "sessions" VALUES('s-20261101T000000Z',NULL,'2026-11-01T00:00:00.500000','2026-11-01T00:00:02.000000');
CREATE TABLE toolchain_state (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO "toolchain_state" VALUES('co2_bins_rowid','31');
INSERT INTO "toolchain_state" VALUES('measurements:tcp_device_types','1=tsl2561-si7021');
INSERT INTO "toolchain_state" VALUES('data_quality_day','2026-12-08');
CREATE TABLE update_downloads (
    ts          TEXT NOT NULL,     -- UTC 'YYYY-MM-DDTHH:MM:SS.ffffff', when the reply ended
    update_name TEXT NOT NULL,     -- the update directory, e.g. update-2026-11-29a
    file        TEXT,              -- path below it; NULL for the update's recursive listing
    unit_id     TEXT NOT NULL,
    bytes       INTEGER NOT NULL,  -- bytes handed to the connection
    size        INTEGER NOT NULL,  -- the file's size
    full        INTEGER NOT NULL   -- 1 when all of it was sent, 0 when cut short
);
CREATE UNIQUE INDEX pings_unit_ts ON pings (unit_id, ping_ts);
CREATE INDEX pings_ts ON pings (ping_ts);
CREATE INDEX update_downloads_unit ON update_downloads (unit_id, update_name);
CREATE INDEX gateway_receipts_device_ts ON gateway_receipts (device, ts);
CREATE INDEX gateway_receipts_device_verdict
    ON gateway_receipts (device, verdict, ts);
CREATE UNIQUE INDEX co2_readings_key ON co2_readings (unit_id, date, time);
CREATE INDEX error_logs_unit ON error_logs (unit_id, idate, itime);
CREATE INDEX dropped_lines_file ON dropped_lines (src_file, src_line);
CREATE VIEW dropped_by_unit AS
    SELECT substr(f.path, 6, instr(substr(f.path, 6), '/') - 1) AS unit_id,
           substr(d.reason, 10) AS reason, count(*) AS rows
    FROM dropped_lines d JOIN import_files f ON f.id = d.src_file
    WHERE f.kind = 'readings' AND d.reason LIKE 'dropped: %'
    GROUP BY 1, 2;
COMMIT;
PRAGMA user_version = 2;
