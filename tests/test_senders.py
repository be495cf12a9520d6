"""Code delivery through Twilio, Alibaba Cloud, Tencent Cloud and SendGrid.

Each provider's base URL points at a local stand-in (an aiohttp server on
127.0.0.1) that checks the request the way the provider documents it — the
authentication or signature recomputed here independently of app/senders,
the parameters, the template variables, the E.164 number — and answers with
the provider's documented success and error bodies. The signers are also
held to the providers' published worked examples.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote

import pytest
from aiohttp import web

from app.config import load_settings
from app.models.accounts import User, VerificationCode
from tests.factories import make_user

API = "/api/v1"
E164 = re.compile(r"\+[1-9]\d{6,14}")
CODE_RE = re.compile(r"\b(\d{6})\b")

TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-auth-token-for-tests"
TWILIO_FROM = "+15005550006"
ALIYUN_ID = "LTAI-test-access-key"
ALIYUN_SECRET = "aliyun-secret-for-tests"
ALIYUN_SIGN = "派乐"
TENCENT_ID = "AKID-test-secret-id"
TENCENT_KEY = "tencent-secret-key-for-tests"
TENCENT_APP = "1400006666"
SENDGRID_KEY = "SG.test-key.for-tests"

# --- the providers' documented replies ------------------------------------------

TWILIO_CREATED = {
    "account_sid": TWILIO_SID, "api_version": "2010-04-01", "body": "", "direction": "outbound-api",
    "error_code": None, "error_message": None, "from": TWILIO_FROM, "num_segments": "1",
    "sid": "SM" + "a" * 32, "status": "queued", "to": "",
}


def twilio_error(status: int, code: int, message: str):
    return status, {"code": code, "message": message,
                    "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}


def aliyun_reply(code: str, message: str, status: int = 200):
    body = {"Code": code, "Message": message, "RequestId": "F655A8D5-B967-440B-8683-DAD6FF8DE990"}
    if code == "OK":
        body["BizId"] = "9006197469364984400"
    return status, body


def tencent_error(code: str, message: str):
    return 200, {"Response": {"Error": {"Code": code, "Message": message},
                              "RequestId": "a0aabda6-cf91-4f3e-a81f-9198114a2279"}}


def tencent_status(number: str, code: str, message: str):
    return {"Response": {"SendStatusSet": [{
        "SerialNo": "5000:1045710669157053657849499619", "PhoneNumber": number, "Fee": 1,
        "SessionContext": "", "Code": code, "Message": message, "IsoCode": "CN"}],
        "RequestId": "a0aabda6-cf91-4f3e-a81f-9198114a2279"}}


SENDGRID_BAD_TO = (400, {"errors": [{
    "message": "Does not contain a valid address.", "field": "personalizations.0.to.0.email",
    "help": "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"}]})

# What each provider answers for "this number is not valid", a per-number
# throttle, and an outage.
INVALID = {
    "twilio": twilio_error(400, 21211, "Invalid 'To' Phone Number"),
    "aliyun": aliyun_reply("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号"),
    "tencent": ("status", "InvalidParameterValue.IncorrectPhoneNumber", "incorrect phone number"),
}
THROTTLED = {
    "twilio": twilio_error(400, 14107, "SMS rate limit exceeded"),
    "aliyun": aliyun_reply("isv.BUSINESS_LIMIT_CONTROL", "触发号码天级流控Permits:10"),
    "tencent": ("status", "LimitExceeded.PhoneNumberDailyLimit", "the number of SMS messages "
                "sent from a single mobile number every day exceeds the upper limit"),
}
OUTAGE = {
    "twilio": twilio_error(503, 20503, "Service Unavailable"),
    "aliyun": aliyun_reply("isp.SYSTEM_ERROR", "系统错误"),
    "tencent": tencent_error("InternalError.SendAndRecvFail", "timeout of the interface"),
    "sendgrid": (503, {"errors": [{"message": "Service Unavailable", "field": None}]}),
}


# --- the stand-ins ------------------------------------------------------------------


class StandIn:
    """One provider's API. `script` holds replies to give instead of success, in
    order; `problems` lists every way a request broke the documented contract."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.requests: list[dict] = []
        self.problems: list[str] = []
        self.script: list = []
        self.nonces: set[str] = set()
        self.url = ""

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.problems.append(what)
        return ok

    def codes(self) -> list[str]:
        return [r["code"] for r in self.requests if r.get("code")]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        record: dict = {"path": request.path}
        verified = await getattr(self, f"verify_{self.kind}")(request, body, record)
        self.requests.append(record)
        if not verified:
            return self.auth_failure()
        if self.script:
            reply = self.script.pop(0)
            if reply[0] == "status":  # Tencent: a per-number status inside a 200
                return web.json_response(tencent_status(record["to"], reply[1], reply[2]))
            return web.json_response(reply[1], status=reply[0])
        return self.success(record)

    def success(self, record: dict) -> web.Response:
        if self.kind == "twilio":
            return web.json_response({**TWILIO_CREATED, "to": record["to"],
                                      "body": record["text"]}, status=201)
        if self.kind == "aliyun":
            return web.json_response(aliyun_reply("OK", "OK")[1])
        if self.kind == "tencent":
            return web.json_response(tencent_status(record["to"], "Ok", "send success"))
        return web.Response(status=202)

    def auth_failure(self) -> web.Response:
        if self.kind == "twilio":
            status, body = twilio_error(401, 20003, "Authenticate")
            return web.json_response(body, status=status)
        if self.kind == "aliyun":
            return web.json_response({
                "RequestId": "8906582E-6722-409A-A6C4-0E7863B733A5", "HostId": "dysmsapi.aliyuncs.com",
                "Code": "SignatureDoesNotMatch",
                "Message": "Specified signature is not matched with our calculation."}, status=400)
        if self.kind == "tencent":
            return web.json_response(tencent_error(
                "AuthFailure.SignatureFailure", "The provided credentials could not be validated.")[1])
        return web.json_response({"errors": [{"field": None, "message": "authorization required",
                                              "help": None}]}, status=401)

    # Twilio: Basic auth, form fields of the Messages resource.
    async def verify_twilio(self, request, body: bytes, record: dict) -> bool:
        self.check(request.method == "POST", "method")
        self.check(request.path == f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json", "path")
        expected = "Basic " + base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
        ok = self.check(request.headers.get("Authorization") == expected, "basic auth")
        self.check(request.content_type == "application/x-www-form-urlencoded", "content type")
        form = dict(parse_qsl(body.decode()))
        self.check(set(form) in ({"To", "From", "Body"}, {"To", "MessagingServiceSid", "Body"}),
                   f"form fields {sorted(form)}")
        self.check(bool(E164.fullmatch(form.get("To", ""))), "To in E.164")
        record.update(to=form.get("To"), text=form.get("Body", ""), form=form)
        m = CODE_RE.search(record["text"])
        record["code"] = m.group(1) if m else None
        return ok

    # Alibaba Cloud: ACS3-HMAC-SHA256 over the RPC query of SendSms.
    async def verify_aliyun(self, request, body: bytes, record: dict) -> bool:
        h = request.headers
        m = re.fullmatch(r"ACS3-HMAC-SHA256 Credential=([^,]+),SignedHeaders=([a-z0-9;-]+),"
                         r"Signature=([0-9a-f]{64})", h.get("Authorization", ""))
        if not self.check(m is not None, "authorization header shape"):
            return False
        key_id, signed, signature = m.groups()
        names = signed.split(";")
        must = {"host", "x-acs-action", "x-acs-content-sha256", "x-acs-date",
                "x-acs-signature-nonce", "x-acs-version"}
        self.check(must <= set(names) and names == sorted(names), f"signed headers {signed}")
        self.check(h.get("x-acs-action") == "SendSms", "action")
        self.check(h.get("x-acs-version") == "2017-05-25", "version")
        self.check(h.get("x-acs-content-sha256") == hashlib.sha256(body).hexdigest(), "body hash")
        when = datetime.strptime(h.get("x-acs-date", ""), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        self.check(abs((datetime.now(UTC) - when).total_seconds()) < 900, "x-acs-date is now")
        nonce = h.get("x-acs-signature-nonce", "")
        self.check(bool(nonce) and nonce not in self.nonces, "fresh nonce")
        self.nonces.add(nonce)

        def enc(s: str) -> str:
            return quote(s, safe="~")

        params = parse_qsl(request.query_string, keep_blank_values=True)
        query = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(params))
        headers = "".join(f"{n}:{h.get(n, '').strip()}\n" for n in names)
        canonical = "\n".join([request.method, request.path, query, headers, signed,
                               hashlib.sha256(body).hexdigest()])
        to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
        expected = hmac.new(ALIYUN_SECRET.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
        ok = self.check(key_id == ALIYUN_ID and hmac.compare_digest(signature, expected),
                        "signature")
        p = dict(params)
        self.check(set(p) == {"PhoneNumbers", "SignName", "TemplateCode", "TemplateParam"},
                   f"parameters {sorted(p)}")
        self.check(p.get("SignName") == ALIYUN_SIGN, "sign name")
        self.check(re.fullmatch(r"[1-9]\d{6,14}", p.get("PhoneNumbers", "")) is not None,
                   "PhoneNumbers: country code + number")
        variables = json.loads(p.get("TemplateParam", "{}"))
        self.check(set(variables) == {"code", "minutes"}, "template variables")
        record.update(to="+" + p.get("PhoneNumbers", ""), template=p.get("TemplateCode"),
                      code=variables.get("code"), minutes=variables.get("minutes"))
        return ok

    # Tencent Cloud: TC3-HMAC-SHA256 over a JSON SendSms body.
    async def verify_tencent(self, request, body: bytes, record: dict) -> bool:
        h = request.headers
        m = re.fullmatch(r"TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/sms/tc3_request, "
                         r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})",
                         h.get("Authorization", ""))
        if not self.check(m is not None, "authorization header shape"):
            return False
        secret_id, date, signed, signature = m.groups()
        names = signed.split(";")
        self.check({"content-type", "host"} <= set(names), "content-type and host signed")
        self.check(h.get("X-TC-Action") == "SendSms", "action")
        self.check(h.get("X-TC-Version") == "2021-01-11", "version")
        self.check(h.get("X-TC-Region") == "ap-guangzhou", "region")
        self.check(h.get("Content-Type") == "application/json; charset=utf-8", "content type")
        ts = int(h.get("X-TC-Timestamp", "0"))
        self.check(abs(time.time() - ts) < 300, "timestamp is now")
        self.check(datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d") == date, "scope date")
        headers = "".join(f"{n}:{h.get(n, '').strip().lower()}\n" for n in names)
        canonical = "\n".join(["POST", "/", "", headers, signed, hashlib.sha256(body).hexdigest()])
        to_sign = "\n".join(["TC3-HMAC-SHA256", str(ts), f"{date}/sms/tc3_request",
                             hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("TC3" + TENCENT_KEY).encode()
        for part in (date, "sms", "tc3_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        ok = self.check(secret_id == TENCENT_ID and hmac.compare_digest(signature, expected),
                        "signature")
        data = json.loads(body)
        self.check(set(data) == {"PhoneNumberSet", "SmsSdkAppId", "SignName", "TemplateId",
                                 "TemplateParamSet"}, f"fields {sorted(data)}")
        self.check(data.get("SmsSdkAppId") == TENCENT_APP, "app id")
        numbers = data.get("PhoneNumberSet") or [""]
        self.check(len(numbers) == 1 and E164.fullmatch(numbers[0]) is not None, "E.164 number")
        params = data.get("TemplateParamSet") or []
        self.check(len(params) == 2 and all(isinstance(v, str) for v in params),
                   "template parameters {1} {2} as strings")
        record.update(to=numbers[0], template=data.get("TemplateId"),
                      code=params[0] if params else None, minutes=params[1] if params else None)
        return ok

    # SendGrid: Bearer key, v3 mail/send JSON.
    async def verify_sendgrid(self, request, body: bytes, record: dict) -> bool:
        self.check(request.path == "/v3/mail/send", "path")
        ok = self.check(request.headers.get("Authorization") == f"Bearer {SENDGRID_KEY}", "bearer")
        self.check(request.content_type == "application/json", "content type")
        data = json.loads(body)
        to = data["personalizations"][0]["to"][0]["email"]
        content = data["content"][0]
        self.check(content["type"] == "text/plain", "plain text")
        self.check(data["from"]["email"] == "no-reply@parley.example", "from")
        m = CODE_RE.search(content["value"])
        record.update(to=to, subject=data["subject"], text=content["value"],
                      code=m.group(1) if m else None)
        return ok


def provider_settings(kind: str, url: str, **extra) -> dict:
    if kind == "twilio":
        base = dict(sms_provider="twilio", twilio_account_sid=TWILIO_SID,
                    twilio_auth_token=TWILIO_TOKEN, twilio_from=TWILIO_FROM, twilio_base_url=url)
    elif kind == "aliyun":
        base = dict(sms_provider="aliyun", aliyun_access_key_id=ALIYUN_ID,
                    aliyun_access_key_secret=ALIYUN_SECRET, aliyun_sms_sign_name=ALIYUN_SIGN,
                    aliyun_sms_template_code="SMS_100000001",
                    aliyun_sms_template_code_en="SMS_200000002", aliyun_sms_base_url=url)
    elif kind == "tencent":
        base = dict(sms_provider="tencent", tencent_secret_id=TENCENT_ID,
                    tencent_secret_key=TENCENT_KEY, tencent_sms_sdk_app_id=TENCENT_APP,
                    tencent_sms_sign_name="派乐", tencent_sms_template_id="100001",
                    tencent_sms_template_id_en="200002", tencent_sms_base_url=url)
    else:
        base = dict(email_provider="sendgrid", sendgrid_api_key=SENDGRID_KEY,
                    sendgrid_base_url=url, smtp_from="Parley <no-reply@parley.example>")
    return {**base, **extra}


@pytest.fixture
def extra_settings():
    return {}


@pytest.fixture
async def standin(request, aiohttp_server):
    kind = getattr(request, "param", "twilio")
    s = StandIn(kind)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", s.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    s.url = f"http://127.0.0.1:{server.port}"
    return s


@pytest.fixture
def settings_overrides(standin, extra_settings):
    return provider_settings(standin.kind, standin.url, **extra_settings)


SMS = ["twilio", "aliyun", "tencent"]
ALL = SMS + ["sendgrid"]


async def ask(client, *, purpose="login", **target):
    return await client.post(f"{API}/auth/codes", json={"purpose": purpose, **target})


async def expect_error(resp, status: int, code: str) -> dict:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["error"]["code"] == code, body
    return body["error"]


def target_for(kind: str, phone: str = "+8613800138000", email: str = "ann@example.org") -> dict:
    return {"email": email} if kind == "sendgrid" else {"phone": phone}


# --- the published worked examples ------------------------------------------------


def test_tencent_tc3_signature_reproduces_the_documented_example():
    """Tencent Cloud "Signature v3" (TC3-HMAC-SHA256), the CVM DescribeInstances example."""
    from app.senders.tencent import authorization

    payload = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
    assert hashlib.sha256(payload).hexdigest() == \
        "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    got = authorization("AKID**********************0123456789EXAMPLE",
                        "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", service="cvm",
                        host="cvm.tencentcloudapi.com", payload=payload, timestamp=1551113065)
    assert got == (
        "TC3-HMAC-SHA256 Credential=AKID**********************0123456789EXAMPLE/2019-02-25/cvm/"
        "tc3_request, SignedHeaders=content-type;host, "
        "Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168")


def test_aliyun_acs3_signature_reproduces_the_documented_example():
    """Alibaba Cloud "Request syntax and signature method V3", the ECS RunInstances example."""
    from app.senders.aliyun import signed_headers

    headers = signed_headers(
        "POST", "ecs.cn-shanghai.aliyuncs.com", "/",
        {"ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
         "RegionId": "cn-shanghai"}, b"", "RunInstances", "2014-05-26",
        "YourAccessKeyId", "YourAccessKeySecret",
        date="2023-10-26T10:22:32Z", nonce="3156853299f313e23d1673dc12e1703d")
    assert headers["x-acs-content-sha256"] == \
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert headers["Authorization"] == (
        "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;"
        "x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,"
        "Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0")


def test_aliyun_percent_encoding_follows_rfc3986():
    from app.senders.aliyun import canonical_query

    assert canonical_query({"b": "a b*c~d", "a": "派+/"}) == "a=%E6%B4%BE%2B%2F&b=a%20b%2Ac~d"


# --- codes that arrive ------------------------------------------------------------


@pytest.mark.parametrize("standin", ALL, indirect=True)
async def test_code_arrives_through_the_provider_and_signs_in(client, deps, standin):
    target = target_for(standin.kind)
    p = await make_user(deps, **({"phone": target["phone"]} if "phone" in target else
                                 {"email": target["email"]}))
    r = await ask(client, **target)
    assert r.status == 202, await r.text()
    assert standin.problems == []
    assert len(standin.requests) == 1
    sent = standin.requests[0]
    assert sent["to"] == (target.get("phone") or target["email"])
    r = await client.post(f"{API}/auth/login/code", json={**target, "code": sent["code"]})
    assert r.status == 200, await r.text()
    assert (await r.json())["user"]["id"] == p.user_id


@pytest.mark.parametrize("standin", ALL, indirect=True)
async def test_stand_in_refuses_a_wrong_secret_and_the_api_says_unavailable(
        client, deps, standin, settings):
    # Same provider, wrong secret: the stand-in's own signature check must catch it.
    wrong = {"twilio": "twilio_auth_token", "aliyun": "aliyun_access_key_secret",
             "tencent": "tencent_secret_key", "sendgrid": "sendgrid_api_key"}[standin.kind]
    from app.senders import build_senders

    deps.senders = build_senders(settings.with_(**{wrong: "not-the-secret"}))
    target = target_for(standin.kind)
    r = await ask(client, **target)
    err = await expect_error(r, 503, "unavailable")
    assert "Signature" not in err["message"] and "auth" not in err["message"].lower()
    assert standin.problems and len(standin.requests) == 1  # a refusal is not retried
    assert await VerificationCode.all().count() == 0


@pytest.mark.parametrize("standin", SMS, indirect=True)
async def test_number_the_provider_rejects_is_invalid_and_no_code_is_stored(client, standin):
    standin.script = [INVALID[standin.kind]]
    r = await ask(client, phone="+8613800138000")
    err = await expect_error(r, 400, "invalid")
    assert err["details"] == {"field": "phone"}
    # Nothing of the provider's answer leaks.
    assert "21211" not in err["message"] and "isv" not in err["message"]
    assert "IncorrectPhoneNumber" not in err["message"]
    assert len(standin.requests) == 1 and standin.problems == []
    assert await VerificationCode.all().count() == 0


@pytest.mark.parametrize("standin", SMS, indirect=True)
async def test_provider_throttling_is_unavailable_and_not_retried(client, standin):
    standin.script = [THROTTLED[standin.kind]]
    r = await ask(client, phone="+8613800138000")
    await expect_error(r, 503, "unavailable")
    assert len(standin.requests) == 1
    assert await VerificationCode.all().count() == 0


@pytest.mark.parametrize("standin", ALL, indirect=True)
async def test_one_outage_is_retried_once_and_the_second_code_works(client, deps, standin):
    target = target_for(standin.kind)
    standin.script = [OUTAGE[standin.kind]]
    r = await ask(client, **target)
    assert r.status == 202, await r.text()
    assert len(standin.requests) == 2 and standin.problems == []
    assert await VerificationCode.all().count() == 1
    await make_user(deps, **target)
    r = await client.post(f"{API}/auth/login/code", json={**target, "code": standin.codes()[-1]})
    assert r.status == 200


@pytest.mark.parametrize("standin", ALL, indirect=True)
async def test_a_lasting_outage_is_unavailable_after_one_retry(client, standin):
    standin.script = [OUTAGE[standin.kind], OUTAGE[standin.kind], OUTAGE[standin.kind]]
    r = await ask(client, **target_for(standin.kind))
    await expect_error(r, 503, "unavailable")
    assert len(standin.requests) == 2
    assert await VerificationCode.all().count() == 0


@pytest.mark.parametrize("standin", ["twilio"], indirect=True)
async def test_unreachable_provider_is_unavailable_not_500(client, deps, settings):
    from app.senders import build_senders

    deps.senders = build_senders(settings.with_(twilio_base_url="http://127.0.0.1:1"))
    r = await ask(client, phone="+14155550123")
    await expect_error(r, 503, "unavailable")


@pytest.mark.parametrize("standin", ["tencent"], indirect=True)
async def test_a_failed_resend_leaves_the_previous_code_usable(client, deps, standin):
    await make_user(deps, phone="+8613800138000")
    assert (await ask(client, phone="+8613800138000")).status == 202
    first = standin.codes()[0]
    standin.script = [INVALID["tencent"]]
    await expect_error(await ask(client, phone="+8613800138000"), 400, "invalid")
    r = await client.post(f"{API}/auth/login/code", json={"phone": "+8613800138000", "code": first})
    assert r.status == 200


# --- language and lifetime ----------------------------------------------------------


@pytest.mark.parametrize("extra_settings", [{"code_ttl": 300}])
@pytest.mark.parametrize("standin", ["twilio"], indirect=True)
async def test_twilio_text_is_chinese_for_86_and_zh_accounts_and_follows_code_ttl(
        client, deps, standin):
    p = await make_user(deps, phone="+14155550123")
    await ask(client, phone="+8613800138000")  # no account: the number decides
    await ask(client, phone="+442079460958")
    await ask(client, phone="+14155550123")
    await User.filter(id=p.user_id).update(language="zh-CN")
    await ask(client, phone="+14155550123", purpose="reset_password")
    assert standin.problems == []
    zh86, en, en_account, zh_account = (r["text"] for r in standin.requests)
    assert "验证码" in zh86 and "5 分钟" in zh86 and "登录" in zh86
    assert en.startswith("Your Parley sign-in code is") and "5 minutes" in en
    assert "验证码" not in en_account
    assert "重置密码" in zh_account and "5 分钟" in zh_account
    assert standin.requests[0]["form"]["From"] == TWILIO_FROM


@pytest.mark.parametrize("extra_settings", [{"twilio_messaging_service_sid": "MG" + "1" * 32}])
@pytest.mark.parametrize("standin", ["twilio"], indirect=True)
async def test_twilio_messaging_service_replaces_from(client, standin):
    assert (await ask(client, phone="+14155550123")).status == 202
    form = standin.requests[0]["form"]
    assert form["MessagingServiceSid"] == "MG" + "1" * 32 and "From" not in form


@pytest.mark.parametrize("extra_settings", [{"code_ttl": 900}])
@pytest.mark.parametrize("standin", ["aliyun", "tencent"], indirect=True)
async def test_template_providers_pick_the_template_by_language_and_pass_the_lifetime(
        client, deps, standin):
    zh, en = {"aliyun": ("SMS_100000001", "SMS_200000002"), "tencent": ("100001", "200002")}[
        standin.kind]
    p = await make_user(deps, phone="+442079460958")
    await ask(client, phone="+8613800138000")
    await ask(client, phone="+442079460958")
    await User.filter(id=p.user_id).update(language="zh-CN")
    await ask(client, phone="+442079460958")
    assert standin.problems == []
    assert [r["template"] for r in standin.requests] == [zh, en, zh]
    assert {r["minutes"] for r in standin.requests} == {"15"}
    assert [r["to"] for r in standin.requests] == ["+8613800138000", "+442079460958",
                                                    "+442079460958"]


@pytest.mark.parametrize("extra_settings", [{"code_ttl": 1200}])
@pytest.mark.parametrize("standin", ["sendgrid"], indirect=True)
async def test_sendgrid_mail_in_the_account_language_with_the_real_lifetime(
        client, deps, standin):
    p = await make_user(deps, email="zhu@example.org")
    await ask(client, email="ann@example.org", purpose="register")
    await User.filter(id=p.user_id).update(language="zh-CN")
    await ask(client, email="zhu@example.org")
    en, zh = standin.requests
    assert en["subject"] == "Your Parley sign-up code" and "20 minutes" in en["text"]
    assert zh["subject"] == "你的 Parley 登录验证码" and "20 分钟内有效" in zh["text"]


# --- cost control -------------------------------------------------------------------


@pytest.mark.parametrize("extra_settings", [{"sms_allowed_countries": "86, +852"}])
@pytest.mark.parametrize("standin", ["aliyun"], indirect=True)
async def test_numbers_outside_the_allowed_countries_are_refused_before_sending(client, standin):
    err = await expect_error(await ask(client, phone="+14155550123"), 400, "invalid")
    assert err["details"] == {"field": "phone"}
    assert standin.requests == []
    assert (await ask(client, phone="+8613800138000")).status == 202
    assert (await ask(client, phone="+85251234567")).status == 202
    assert len(standin.requests) == 2


@pytest.mark.parametrize("extra_settings", [{"sms_daily_limit": 2}])
@pytest.mark.parametrize("standin", ["tencent"], indirect=True)
async def test_daily_sms_budget_is_global(client, standin):
    assert (await ask(client, phone="+8613800138000")).status == 202
    assert (await ask(client, phone="+8613800138001")).status == 202
    r = await ask(client, phone="+8613800138002")
    await expect_error(r, 503, "unavailable")
    assert 1 <= int(r.headers["Retry-After"]) <= 86400
    assert len(standin.requests) == 2
    # Email codes are not part of the SMS budget.
    assert (await ask(client, email="ann@example.org")).status == 202


TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "")


@pytest.mark.skipif(not TEST_REDIS_URL, reason="TEST_REDIS_URL not set")
@pytest.mark.parametrize("extra_settings", [{"sms_daily_limit": 3, "redis_url": TEST_REDIS_URL}])
@pytest.mark.parametrize("standin", ["aliyun"], indirect=True)
async def test_daily_sms_budget_is_shared_through_redis(client, standin):
    import redis.asyncio as redis

    from app.api.http import DEPS_KEY

    limiter = client.server.app[DEPS_KEY].limiter
    key = limiter._key(f"code:sms:day:{datetime.now(UTC):%Y-%m-%d}")
    other = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        await other.delete(key)
        assert (await ask(client, phone="+8613800138000")).status == 202
        assert int(await other.get(key)) == 1
        # Another process spent the rest of today's budget.
        await other.incrby(key, 2)
        await expect_error(await ask(client, phone="+8613800138001"), 503, "unavailable")
        assert len(standin.requests) == 1
    finally:
        await other.delete(key)
        await other.aclose()


@pytest.mark.parametrize("standin", ["twilio"], indirect=True)
async def test_metrics_count_codes_sent_and_failed_by_provider_and_reason(client, standin):
    assert (await ask(client, phone="+14155550123")).status == 202
    standin.script = [INVALID["twilio"]]
    await ask(client, phone="+14155550124")
    standin.script = [OUTAGE["twilio"], OUTAGE["twilio"]]
    await ask(client, phone="+14155550125")
    text = await (await client.get("/metrics")).text()
    assert 'parley_codes_sent_total{channel="sms",provider="twilio"} 1.0' in text
    assert 'parley_codes_failed_total{provider="twilio",reason="invalid_recipient"} 1.0' in text
    assert 'parley_codes_failed_total{provider="twilio",reason="outage"} 2.0' in text


# --- configuration ------------------------------------------------------------------


def test_provider_settings_are_checked_at_start_up():
    from app.senders import build_senders

    def build(**env):
        return build_senders(load_settings(environ={k.upper(): v for k, v in env.items()},
                                           secret_key="k" * 48))

    with pytest.raises(ValueError, match="TWILIO_AUTH_TOKEN"):
        build(sms_provider="twilio", twilio_account_sid=TWILIO_SID, twilio_from=TWILIO_FROM)
    with pytest.raises(ValueError, match="TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID"):
        build(sms_provider="twilio", twilio_account_sid=TWILIO_SID, twilio_auth_token="t")
    with pytest.raises(ValueError, match="ALIYUN_SMS_TEMPLATE_CODE"):
        build(sms_provider="aliyun", aliyun_access_key_id="i", aliyun_access_key_secret="s",
              aliyun_sms_sign_name="n")
    with pytest.raises(ValueError, match="TENCENT_SMS_SDK_APP_ID"):
        build(sms_provider="tencent", tencent_secret_id="i", tencent_secret_key="k",
              tencent_sms_sign_name="n", tencent_sms_template_id="1")
    with pytest.raises(ValueError, match="SENDGRID_API_KEY"):
        build(email_provider="sendgrid")
    with pytest.raises(ValueError, match="SMS_ALLOWED_COUNTRIES"):
        build(sms_allowed_countries="CN,HK")
    with pytest.raises(ValueError, match="unknown SMS_PROVIDER"):
        build(sms_provider="carrier-pigeon")
    with pytest.raises(ValueError, match="unknown EMAIL_PROVIDER"):
        build(email_provider="fax")
    senders = build(sms_provider="tencent", tencent_secret_id="i", tencent_secret_key="k",
                    tencent_sms_sdk_app_id="1400006666", tencent_sms_sign_name="n",
                    tencent_sms_template_id="1", email_provider="sendgrid",
                    sendgrid_api_key="SG.x")
    assert (senders["phone"].provider, senders["email"].provider) == ("tencent", "sendgrid")
    assert build()["phone"].provider == "log"


def test_every_sms_provider_implements_the_interface():
    from app.senders import CodeSender, SmsProvider
    from app.senders.aliyun import AliyunSender
    from app.senders.sendgrid import SendGridSender
    from app.senders.tencent import TencentSender
    from app.senders.twilio import TwilioSender

    sms = [TwilioSender(TWILIO_SID, TWILIO_TOKEN, from_=TWILIO_FROM),
           AliyunSender(ALIYUN_ID, ALIYUN_SECRET, sign_name="s", template_code="SMS_1"),
           TencentSender(TENCENT_ID, TENCENT_KEY, sdk_app_id=TENCENT_APP, sign_name="s",
                         template_id="1")]
    assert all(isinstance(p, SmsProvider) for p in sms)
    assert [p.provider for p in sms] == SMS
    assert isinstance(SendGridSender(SENDGRID_KEY, "x@example.org"), CodeSender)
