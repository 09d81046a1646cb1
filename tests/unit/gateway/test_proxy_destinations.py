"""The gateway's proxy checks (issue 17): the shape of a proxy URL, and where it points."""

from __future__ import annotations

import pytest

from services.gateway.validators import PRIVATE_PROXY, check_proxy, check_proxy_destination


@pytest.mark.parametrize(
    "proxy",
    [
        "http://127.0.0.1:3128",
        "http://user:pass@10.0.0.7:8080",
        "socks5://192.168.1.10:1080",
        "http://169.254.169.254:80",
        "http://[::1]:3128",
        "http://[fd00::1]:3128",
        "http://[::ffff:127.0.0.1]:3128",
        "http://100.64.0.9:3128",
        "http://0.0.0.0:3128",
        "http://localhost:3128",  # a name: resolved, and its addresses are loopback ones
    ],
)
async def test_a_proxy_on_a_private_address_is_refused(proxy: str) -> None:
    assert check_proxy(proxy) == proxy  # well formed
    with pytest.raises(ValueError, match="private, loopback or link-local") as refused:
        await check_proxy_destination(proxy, allow_private=False)
    assert str(refused.value) == PRIVATE_PROXY
    assert "pass" not in str(refused.value)


@pytest.mark.parametrize(
    "proxy",
    [
        "http://8.8.8.8:3128",
        "socks5://[2606:4700::1111]:1080",
        # Does not resolve here: accepted (the recorders resolve it again, themselves).
        "http://proxy.invalid:3128",
    ],
)
async def test_a_public_or_unresolvable_proxy_is_accepted(proxy: str) -> None:
    await check_proxy_destination(proxy, allow_private=False)


async def test_private_proxies_when_the_deployment_allows_them() -> None:
    await check_proxy_destination("http://127.0.0.1:3128", allow_private=True)
    await check_proxy_destination("http://localhost:3128", allow_private=True)


@pytest.mark.parametrize(
    "proxy", ["http://2130706433:3128", "http://127.1:3128", "http://0x7f000001:3128"]
)
def test_numeric_host_forms_are_no_host_names(proxy: str) -> None:
    with pytest.raises(ValueError, match="host name or an IP address"):
        check_proxy(proxy)
