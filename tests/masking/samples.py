"""Planted values per built-in recognizer: positives (the secret part) and near misses."""

from __future__ import annotations

PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0bu3aozN3tihPmljnnudb9G3HecDdK\n"
    "Xx2+3F6vGg1yUqbQ0hvQzFWfK9ZRL5zYyNDTKx8r7fVOdJWHzULOkzWj1V3Bn6dN\n"
    "rXz6Ly3hr3nW6aFN2x1qmkGdYw==\n"
    "-----END RSA PRIVATE KEY-----"
)

# id -> list of (text, secret substring that must not survive)
POSITIVES: dict[str, list[tuple[str, str]]] = {
    "pem_private_key": [
        (PEM, "MIIEpAIBAAKCAQEA1c7"),
        (PEM.replace("RSA ", "OPENSSH "), "rXz6Ly3hr3nW6aFN2x1qmkGdYw"),
        ('{"private_key": "' + PEM.replace("\n", "\\n") + '\\n"}', "MIIEpAIBAAKCAQEA1c7"),
    ],
    "aws_access_key_id": [
        ("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
        ("ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A"),
    ],
    "aws_secret_access_key": [
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        (
            'AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
            "wJalrXUtnFEMI/K7MDENG",
        ),
    ],
    "gcp_api_key": [
        ("key=AIzaSyA1234567890abcdefghijklmnopqrstuv&x", "AIzaSyA1234567890abcdefghijklmnopqrstuv")
    ],
    "gcp_oauth_token": [
        (
            "tok ya29.a0AfH6SMBx3k2lq9Zk1Yb8eXampleTokenValue end",
            "ya29.a0AfH6SMBx3k2lq9Zk1Yb8eXampleTokenValue",
        )
    ],
    "azure_storage_key": [
        (
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey="
            + "Ab3d" * 21
            + "xy==;EndpointSuffix=core.windows.net",
            "Ab3dAb3dAb3dAb3d",
        )
    ],
    "azure_client_secret": [
        (
            "client secret abc8Q~Xy9zAbCdEfGhIjKlMnOpQrStUvWxYz12 set",
            "abc8Q~Xy9zAbCdEfGhIjKlMnOpQrStUvWxYz12",
        )
    ],
    "github_token": [
        (
            "push with ghp_16C7e42F292c6912E7710c838347Ae178B4a ok",
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        ),
        ("github_pat_11ABCDEFG0123456789abc_" + "x" * 59, "github_pat_11ABCDEFG0123456789abc_"),
    ],
    "gitlab_token": [("glpat-Xy9zAbCdEfGhIjKlMnOp", "glpat-Xy9zAbCdEfGhIjKlMnOp")],
    "slack_token": [
        (
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
            "xoxb-123456789012-1234567890123",
        ),
        (
            "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
            "T00000000/B00000000",
        ),
    ],
    "jwt": [
        (
            "token eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U done",
            "eyJzdWIiOiIxMjM0NTY3ODkwIn0",
        )
    ],
    "http_authorization": [
        ("Authorization: Token abcdef123456", "abcdef123456"),
        ("proxy-authorization: Negotiate YIIabcdef==", "YIIabcdef"),
    ],
    "bearer_token": [("curl -H 'x: Bearer abcdefghij0123456789.xyz'", "abcdefghij0123456789")],
    "basic_auth": [("sent Basic dXNlcjpwYXNzd29yZA== upstream", "dXNlcjpwYXNzd29yZA")],
    "url_password": [
        ("postgres://user:PassW0rd@host:5432/db", "PassW0rd"),
        ("redis://:s3cr3t!x@cache:6379", "s3cr3t!x"),
        ("mongodb+srv://admin:hunter2@cluster0.mongodb.net/test", "hunter2"),
    ],
    "secret_key_value": [
        ("password=hunter2", "hunter2"),
        ("db_password: Tr0ub4dor&3", "Tr0ub4dor"),
        ("secret: s3cr3tvalue", "s3cr3tvalue"),
        ("token=abc123def", "abc123def"),
        ('{"client_secret": "xyz-very-secret"}', "xyz-very-secret"),
        ("ALTER USER bob PASSWORD 'pa ss';", "pa ss"),
        ("api_key => 'k-123456'", "k-123456"),
    ],
    "email": [
        ("mail john.doe@example.com now", "john.doe@example.com"),
        ("<a+b@mail.example.co.uk>", "a+b@mail.example.co.uk"),
    ],
    "card": [
        ("card 4111 1111 1111 1111 ok", "4111 1111 1111 1111"),
        ("4111-1111-1111-1111", "4111-1111-1111-1111"),
        ("amex 378282246310005.", "378282246310005"),
        ("pan=5555555555554444", "5555555555554444"),
    ],
    "ssn": [("ssn 123-45-6789.", "123-45-6789"), ("1234 200 123-45-6789", "123-45-6789")],
    "iban": [
        ("IBAN DE89 3704 0044 0532 0130 00, thanks", "3704 0044 0532"),
        ("GB82WEST12345698765432", "GB82WEST12345698765432"),
    ],
    "phone": [
        ("call +14155552671", "4155552671"),
        ("+44 20 7946 0958", "7946 0958"),
        ("(415) 555-2671", "555-2671"),
        ("tel 415-555-2671.", "415-555-2671"),
        ("415.555.2671", "415.555.2671"),
    ],
    "ipv4": [("from 192.168.1.20:22", "192.168.1.20"), ("dns 8.8.8.8.", "8.8.8.8")],
    "ipv6": [
        ("addr 2001:db8:85a3::8a2e:370:7334 up", "2001:db8:85a3::8a2e:370:7334"),
        ("[fe80::1ff:fe23:4567:890a]:22", "fe80::1ff:fe23:4567:890a"),
        ("2001:0db8:0000:0000:0000:ff00:0042:8329", "2001:0db8:0000:0000:0000:ff00:0042:8329"),
    ],
}

# id -> texts that recognizer alone must leave untouched
NEGATIVES: dict[str, list[str]] = {
    "pem_private_key": [
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        "-----BEGIN PUBLIC KEY-----\nMIIB",
    ],
    "aws_access_key_id": [
        "AKIAIOSFODNN7EXAMPL",
        "akiaiosfodnn7example",
        "XAKIAIOSFODNN7EXAMPLE",
        "AKIBIOSFODNN7EXAMPLE",
    ],
    "aws_secret_access_key": [
        "aws_secret_access_key = short",
        "aws_secret_access_key = " + "a" * 41,
    ],
    "gcp_api_key": [
        "AIzaSyA1234567890abcdefghijklmnopqrstu",
        "AIzaSyA1234567890abcdefghijklmnopqrstuvw",
    ],
    "gcp_oauth_token": ["ya29.short", "ya28.a0AfH6SMBx3k2lq9Zk1Yb8eXampleTokenValue"],
    "azure_storage_key": ["AccountKey=short", "AccountName=acct"],
    "azure_client_secret": ["abc8Q~short", "abcdQ~Xy9zAbCdEfGhIjKlMnOpQrStUvWxYz12"],
    "github_token": [
        "ghp_16C7e42F292c6912E77",
        "ghx_16C7e42F292c6912E7710c838347Ae178B4a",
        "xghp_16C7e42F292c6912E7710c838347Ae178B4a",
    ],
    "gitlab_token": ["glpat-short", "glxyz-Xy9zAbCdEfGhIjKlMnOp"],
    "slack_token": ["xoxz-123456789012-1234567890123", "xoxb-123"],
    "jwt": ["eyJmb28iOjF9.eyJzdWIiOiIxIn0.sig", "eyJhbGciOiJIUzI1NiJ9"],
    "http_authorization": ["Authorization: x", "authorization required"],
    "bearer_token": ["the bearer of bad news", "Bearer short1", "Bearer documentationonlyletters"],
    "basic_auth": ["basic idea", "Basic aGVsbG8gd29ybGQ=", "basic configuration"],
    "url_password": [
        "https://example.com/a:b",
        "postgres://user@host/db",
        "see http://host:8080/path",
    ],
    "secret_key_value": [
        "passwordless login",
        "secretName: my-secret",
        "password=",
        "tokenExpirationSeconds: 3600",
        "password=****",
    ],
    "email": ["john@localhost", "@example.com", "john.@example.com", "a@b.c", "user@-example.com"],
    "card": [
        "4111 1111 1111 1112",
        "1234 5678 9012 3456",
        "4111 1111-1111 1111",
        "order 41111111111111111111111",
        "411111111111",
    ],
    "ssn": [
        "000-12-3456",
        "666-12-3456",
        "912-34-5678",
        "123-00-4567",
        "123-45-0000",
        "123-45-67890",
        "123-45 6789",
    ],
    "iban": ["DE89 3704 0044 0532 0130 01", "GB82WEST12345698765433", "de89370400440532013000"],
    "phone": ["123-456-7890", "415-155-2671", "+1 234", "2024-01-15", "+1 415 555 26"],
    "ipv4": ["256.1.1.1", "1.2.3", "version 1.2.3.4.5", "01.2.3.4", "10.0.0.1a"],
    "ipv6": ["::1", "std::string", "12:34:56", "a::b", "Vec::new()"],
}

# a value of every built-in type, for planting in random text (id, planted text, must-not-survive)
PLANTS: list[tuple[str, str, str]] = [
    (rid, text, secret) for rid, cases in POSITIVES.items() for text, secret in cases
]
