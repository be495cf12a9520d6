"""The words around a code, in the recipient's language (Chinese or English).

Twilio, email and the development log send these texts; Alibaba Cloud and
Tencent Cloud send only templates registered (and reviewed) in their consoles,
filled with the code and the lifetime in minutes (docs/deployment.md).
"""

from __future__ import annotations

from app.senders import CodeMessage

_WHAT = {
    "en": {"register": "sign-up", "login": "sign-in", "reset_password": "password reset",
           "change_email": "email change", "change_phone": "phone change"},
    "zh": {"register": "注册", "login": "登录", "reset_password": "重置密码",
           "change_email": "更改邮箱", "change_phone": "更改手机号"},
}


# Notices carry no code: they tell the old address that the account changed.
_NOTICE = {
    "en": {"email_changed": "The email address of your Parley account was changed.",
           "phone_changed": "The phone number of your Parley account was changed."},
    "zh": {"email_changed": "你的 Parley 账号的邮箱地址已更改。",
           "phone_changed": "你的 Parley 账号的手机号已更改。"},
}
_NOTICE_TAIL = {"en": " If this was not you, reset your password now.",
                "zh": "如果这不是你本人的操作，请立即重置密码。"}


def _notice(msg: CodeMessage) -> str | None:
    text = _NOTICE[msg.lang].get(msg.purpose)
    return text + _NOTICE_TAIL[msg.lang] if text else None


def _what(msg: CodeMessage) -> str:
    return _WHAT[msg.lang].get(msg.purpose, _WHAT[msg.lang]["login"])


def sms_text(msg: CodeMessage) -> str:
    if (notice := _notice(msg)) is not None:
        return ("【Parley】" if msg.lang == "zh" else "Parley: ") + notice
    if msg.lang == "zh":
        return (f"【Parley】您的{_what(msg)}验证码是 {msg.code}，{msg.ttl_minutes} 分钟内有效。"
                "请勿泄露给他人。")
    return (f"Your Parley {_what(msg)} code is {msg.code}. It expires in "
            f"{_minutes_en(msg.ttl_minutes)}. Do not share it.")


def email_subject(msg: CodeMessage) -> str:
    if _notice(msg) is not None:
        return "你的 Parley 账号已更改" if msg.lang == "zh" else "Your Parley account was changed"
    if msg.lang == "zh":
        return f"你的 Parley {_what(msg)}验证码"
    return f"Your Parley {_what(msg)} code"


def email_text(msg: CodeMessage) -> str:
    if (notice := _notice(msg)) is not None:
        return notice
    if msg.lang == "zh":
        return (f"你的 Parley 验证码是 {msg.code}。\n\n{msg.ttl_minutes} 分钟内有效。"
                "如果这不是你本人的操作，请忽略这封邮件。")
    return (f"Your Parley code is {msg.code}.\n\nIt expires in {_minutes_en(msg.ttl_minutes)}. "
            "If you did not ask for it, ignore this message.")


def _minutes_en(n: int) -> str:
    return "1 minute" if n == 1 else f"{n} minutes"
