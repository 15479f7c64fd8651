"""Templates of the privacy corpus (see ``tests/privacy_corpus.py``).

A template is (name, is JSON, text). ``{field}`` is a planted value (a detector's name, or
``aws_key_id``, ``aws_secret``, ``github_token``, ``github_token_in_url``), a hard negative
(``neg_*``), or neutral filler (``name``, ``paragraph``, ...). JSON templates are tool-call
arguments or tool results; their values are inserted JSON-escaped.
"""

from __future__ import annotations

# (name, is JSON, template). {field}: a planted value, a hard negative (neg_*), or filler.
TEMPLATES: tuple[tuple[str, bool, str], ...] = (
    (
        "ticket",
        False,
        "Ticket #{neg_int6}: {name} ({email}) says the charge on card "
        "{payment_card} failed on {neg_date}. Order {neg_order}, total {neg_amount}. Please call "
        "back on {phone}.",
    ),
    (
        "ticket_login",
        False,
        "Hi team, {name} cannot log in since the {neg_version} update. "
        "Account e-mail {email}, last login from {ipv4} at {neg_time}. Build {neg_build}.",
    ),
    (
        "wire",
        False,
        "Please wire {neg_amount} to {name}, IBAN {iban}, reference {neg_order}, before {neg_date}.",
    ),
    (
        "wire_rejected",
        False,
        "Refund failed: IBAN {neg_iban} was rejected by the bank (invalid checksum). Customer phone {phone}.",
    ),
    (
        "onboarding",
        False,
        "Onboarding for {name}: SSN {us_ssn}, start date {neg_date}, "
        "employee id {neg_int8}, desk phone {phone}.",
    ),
    (
        "ssn_rejected",
        False,
        "The form rejected SSN {neg_ssn} as invalid. Employee id {neg_int8}, zip {neg_zip}.",
    ),
    (
        "email",
        False,
        "From: {name} <{email}>\nTo: {name} <{email}>\nDate: "
        "{neg_rfcdate}\nSubject: {sentence}\n\n{paragraph}\n\n--\n{name}\n{job}, {company}\nTel: "
        "{phone}\n",
    ),
    ("signature", False, "{paragraph}\n\nBest,\n{name}\n{company} | {phone} | {email}"),
    (
        "chat",
        False,
        "Can you summarise this for me? {paragraph} The meeting is on {neg_date} "
        "at {neg_time} in room {neg_int3}, ticket {neg_order}.",
    ),
    (
        "code",
        False,
        "```python\n@app.route('/api/v{neg_small}/items')\ndef items(x):\n    return "
        "x[::2]  # {neg_sha}\n```\nRun `pip install requests=={neg_version}` and `docker pull "
        "nginx@sha256:{neg_sha256}`, then `ssh git@github.com`. std::vector<int> v; uuid {neg_uuid}",
    ),
    (
        "log_access",
        False,
        "{neg_iso} INFO  request_id={neg_uuid} user={email} client_ip={ipv4} "
        "path=/v{neg_small}/orders/{neg_order} status=200 duration_ms={neg_float}",
    ),
    (
        "log_ipv6",
        False,
        "{neg_iso} WARN  upstream [{ipv6}]:{neg_port} timed out after "
        "{neg_float} s (attempt {neg_small} of 3)",
    ),
    (
        "log_db",
        False,
        "{neg_iso} ERROR could not connect to "
        "postgres://{user}:{url_password}@{host}:5432/{word}: connection refused",
    ),
    (
        "log_db_template",
        False,
        "{neg_iso} INFO  DATABASE_URL=postgres://{user}:{neg_password}@{"
        "host}:5432/{word} (from .env.example), health https://{host}/healthz",
    ),
    (
        "dotenv",
        False,
        "$ cat .env\nOPENAI_API_KEY={api_key}\nAWS_ACCESS_KEY_ID={aws_key_id}\nAWS_"
        "SECRET_ACCESS_KEY={aws_secret}\nDEBUG=false\nPORT={neg_port}\n",
    ),
    (
        "dotenv_example",
        False,
        "# .env.example\nOPENAI_API_KEY={neg_api_key}\nAWS_ACCESS_KEY_ID=AK"
        "IAIOSFODNN7EXAMPLE\nAWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\nCOMMIT={"
        "neg_sha}\n",
    ),
    ("curl", False, "curl -H 'Authorization: Bearer {jwt}' https://{host}/api/v{neg_small}/me"),
    ("session", False, "The session token in the cookie was {jwt}; it expired at {neg_iso}. Trace {neg_b64}"),
    ("deploy_key", False, "Here is the deploy key, please add it to the server:\n{private_key}\nThanks!"),
    ("certificate", False, "The server certificate:\n{neg_cert}\nfingerprint {neg_sha}"),
    (
        "ip_addr",
        False,
        "$ ip addr show eth0\n2: eth0: <BROADCAST,MULTICAST,UP> mtu 1500\n    "
        "link/ether {neg_mac} brd ff:ff:ff:ff:ff:ff\n    inet {ipv4}/24 scope global eth0\n    inet6 "
        "{ipv6}/64 scope global\n",
    ),
    (
        "versions",
        False,
        "Upgraded from version {neg_ver4} to {neg_version}; user agent "
        "Mozilla/5.0 Chrome/{neg_chrome} Safari/537.36; ISBN {neg_isbn}; tracking {neg_tracking}; "
        "MAC {neg_mac}.",
    ),
    (
        "invoice",
        False,
        "Invoice {neg_invoice} for {neg_amount} is due {neg_date}. Card ending "
        "{neg_int4}; card {neg_card} was declined (Luhn check failed). Asset logo@2x.png, package "
        "lodash@{neg_version}.",
    ),
    (
        "shipping",
        False,
        "Between {neg_date} and {neg_date} we shipped {neg_int6} units "
        "({neg_range}); PO {neg_int10}; serial {neg_serial}; window {neg_time}-{neg_time}; amount "
        "{neg_amount}.",
    ),
    (
        "git_remote",
        False,
        "git remote set-url origin https://{user}:{github_token_in_url}@github.com/{word}/{word}.git",
    ),
    ("leaked_token", False, "Someone pasted {api_key} in #{word}; please rotate it before {neg_date}."),
    (
        "cards_on_file",
        False,
        "Cards on file: {payment_card} (exp {neg_exp}) and {payment_card} (exp {neg_exp}).",
    ),
    ("reply_to", False, "Thanks for your order. If anything is missing, please reply to {email}."),
    ("callback", False, "{name} asked us to call {phone} tomorrow between {neg_time} and {neg_time}."),
    (
        "tool_send_email",
        True,
        '{"to": "{email}", "cc": [], "subject": "{sentence}", "body": '
        '"Hi {first},\\n\\n{paragraph}\\n\\nCall me at {phone}."}',
    ),
    (
        "tool_payment",
        True,
        '{"iban": "{iban}", "amount": {neg_float}, "currency": "EUR", '
        '"reference": "{neg_order}", "due": "{neg_date}"}',
    ),
    (
        "tool_card",
        True,
        '{"card_number": "{payment_card}", "exp": "{neg_exp}", "cvc": "{neg_int3}", "order": "{neg_order}"}',
    ),
    (
        "tool_crm",
        True,
        '{"id": {neg_int6}, "name": "{name}", "email": "{email}", "phone": '
        '"{phone}", "address": "{address}", "created_at": "{neg_iso}", "last_ip": "{ipv4}"}',
    ),
    (
        "tool_sql",
        True,
        '{"query": "SELECT id, name FROM employees WHERE ssn = \'{us_ssn}\' AND '
        "dept = {neg_small} AND hired > '{neg_date}'\"}",
    ),
    (
        "tool_http",
        True,
        '{"method": "GET", "url": "https://{host}/v1/users/{neg_uuid}", '
        '"headers": {"Authorization": "Bearer {jwt}", "X-Request-Id": "{neg_uuid}"}}',
    ),
    (
        "tool_shell",
        True,
        '{"command": "export ANTHROPIC_API_KEY={api_key} && python run.py --seed {neg_small}"}',
    ),
    ("tool_write_key", True, '{"path": "deploy/id_key", "content": "{private_key}"}'),
    (
        "tool_result_log",
        True,
        '{"stdout": "{neg_iso} connected to {ipv4}:{neg_port}\\nuser '
        '{email} authenticated\\nAKIA key {aws_key_id} in use\\n", "exit_code": 0}',
    ),
    (
        "tool_result_build",
        True,
        '{"version": "{neg_version}", "commit": "{neg_sha}", '
        '"build_date": "{neg_date}", "checksum": "sha256:{neg_sha256}", "items": [{neg_int6}, '
        '{neg_int3}], "uuid": "{neg_uuid}"}',
    ),
    (
        "tool_db_config",
        True,
        '{"dsn": "mysql://{user}:{url_password}@{host}:3306/{word}", "pool_size": {neg_small}}',
    ),
    (
        "tool_aws",
        True,
        '{"aws_access_key_id": "{aws_key_id}", "aws_secret_access_key": '
        '"{aws_secret}", "region": "eu-west-1"}',
    ),
    (
        "tool_ids",
        True,
        '{"order_id": "{neg_order}", "tracking": "{neg_tracking}", '
        '"phone_verified": true, "postcode": "{neg_zip}", "amount": "{neg_amount}", "ip_version": '
        '"{neg_ver4}"}',
    ),
)

# Written after the detectors were tuned on TEMPLATES, and measured before any change: a check of
# how far the numbers on TEMPLATES carry over to contexts the detectors were not fitted to.
HELD_OUT_TEMPLATES: tuple[tuple[str, bool, str], ...] = (
    (
        "md_table",
        False,
        "| name | e-mail | phone | since |\n|---|---|---|---|\n| {name} | "
        "{email} | {phone} | {neg_date} |\n| {name} | {email} | {phone} | {neg_date} |",
    ),
    (
        "traceback",
        False,
        "Traceback (most recent call last):\n  File "
        '"/usr/lib/python3.11/site-packages/app/x.py", line {neg_int3}, in run\nValueError: bad id '
        "{neg_int8} at {neg_hexaddr} (pid {neg_int6}, build {neg_version})",
    ),
    (
        "csv",
        False,
        "id,name,email,phone,card\n{neg_int6},{name},{email},{phone},{payment_card}\n{"
        "neg_int6},{name},{email},{phone},{neg_card}",
    ),
    (
        "kubectl",
        False,
        "NAME                 READY   STATUS    RESTARTS   AGE   IP            "
        "NODE\nweb-{neg_int6}   1/1     Running   0          3d4h  {ipv4}   node-{neg_small}",
    ),
    (
        "yaml",
        False,
        "database:\n  host: {host}\n  password: {neg_password}\ncache:\n  url: "
        "redis://default:{url_password}@{host}:6379/0\napi:\n  key: {api_key}\n  timeout: {neg_float}",
    ),
    (
        "statement",
        False,
        "Statement {neg_date} - {neg_date}; account {iban}; BIC DEUTDEFF; "
        "balance {neg_amount}; card **** {neg_int4}; {neg_int6} points.",
    ),
    (
        "german",
        False,
        "Sehr geehrte Damen und Herren, meine Telefonnummer lautet {phone}, "
        "meine IBAN {iban}. Kundennummer {neg_int8}, Rechnung vom {neg_date}. Mit freundlichen "
        "Grüßen, {name}",
    ),
    (
        "metrics",
        False,
        'http_requests_total{method="post",code="200"} {neg_int6} '
        "{neg_epoch_ms}\nprocess_start_time_seconds "
        '{neg_float}e+09\nbuild_info{version="{neg_version}"} 1',
    ),
    (
        "http_dump",
        False,
        "POST /v1/chat HTTP/1.1\nHost: {host}\nAuthorization: Bearer "
        "{api_key}\nX-Forwarded-For: {ipv4}, {ipv4}\nContent-Length: {neg_int3}\nCookie: session={jwt}",
    ),
    (
        "git_log",
        False,
        "commit {neg_sha}\nAuthor: {name} <{email}>\nDate:   {neg_rfcdate}\n\n    "
        "Bump version to {neg_version} (#{neg_int4})",
    ),
    (
        "flight",
        False,
        "Flight LH {neg_int4} departs {neg_date} {neg_time}, seat 23A, booking "
        "{neg_order}, e-ticket 220-{neg_int10}. Questions? {phone}",
    ),
    (
        "ssh",
        False,
        "ssh -i ~/.ssh/id_ed25519 deploy@{ipv4} -p {neg_port}; health at http://[{ipv6}]:8080/health",
    ),
    (
        "segfault",
        False,
        "kernel: app[{neg_int6}]: segfault at {neg_hexaddr} ip {neg_hexaddr} "
        "sp {neg_hexaddr} error 4 in libc.so.6[{neg_hexaddr}+{neg_int6}]",
    ),
    (
        "tool_nested",
        True,
        '{"customer": {"name": "{name}", "contact": {"mobile": "{phone}", '
        '"mail": "{email}"}}, "payment": {"pan": "{payment_card}", "amount": {neg_float}, "iban": '
        '"{iban}"}, "ticket": "{neg_order}"}',
    ),
    (
        "tool_env",
        True,
        '{"env": {"GITHUB_TOKEN": "{github_token}", "STRIPE_KEY": "{api_key}", '
        '"NODE_ENV": "production", "RELEASE": "{neg_version}"}, "cwd": "/srv/app"}',
    ),
)
