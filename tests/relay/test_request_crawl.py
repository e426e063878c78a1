"""``requestCrawl``: what it refuses and why, and a host that asks to be crawled being crawled."""

from __future__ import annotations

from relay_testenv import RelayEnv, RelayEnvFactory, UpstreamHost

from atrepo.host import HostConfig, start_host


async def test_refusals_say_why(relay_env: RelayEnv) -> None:
    for hostname, error in (
        ("127.0.0.1:2583", "InvalidRequest"),  # an address, a port
        ("localhost", "InvalidRequest"),
        ("http://pds.example.com", "InvalidRequest"),  # crawled hosts serve https
        ("https://pds.example.com/xrpc", "InvalidRequest"),  # a path
        ("pds", "InvalidRequest"),
    ):
        reply = await relay_env.call("com.atproto.sync.requestCrawl", body={"hostname": hostname})
        assert (reply.status, reply.error) == (400, error), (hostname, reply.body)
    banned = await relay_env.admin("POST", "/admin/domains/ban", {"domain": "evil.example"})
    assert banned.status == 200, banned.body
    reply = await relay_env.call("com.atproto.sync.requestCrawl", body={"hostname": "pds.evil.example"})
    assert (reply.status, reply.error) == (400, "HostBanned")
    listed = await relay_env.call("com.atproto.sync.listHosts")
    assert [h["hostname"] for h in listed.body["hosts"]] == [relay_env.hosts[0].url.split("://")[1]]


async def test_new_hosts_per_day_limit(relay_env_factory: RelayEnvFactory) -> None:
    env = await relay_env_factory(new_hosts_per_day=1)  # the configured host counts
    reply = await env.call("com.atproto.sync.requestCrawl", body={"hostname": "pds.example.com"})
    assert (reply.status, reply.error) == (429, "RateLimitExceeded"), reply.body
    assert "1 new hosts a day" in reply.body["message"]


async def test_a_host_that_asks_is_crawled_seeded_and_followed(relay_env_factory: RelayEnvFactory) -> None:
    env = await relay_env_factory(crawl_allow_private=True)  # loopback allowed (development)
    alice = await env.create_account("alice.test")
    await env.create_records(alice, 2)
    # a second host, not configured, that notifies the relay (CrawlNotifier: requestCrawl at start)
    running = await start_host(
        HostConfig(
            host="127.0.0.1",
            port=0,
            plc_url=env.hosts[0].plc_url,
            data_dir=env.tmp / "crawled",
            rate_limits=False,
            relays=(env.url,),
        )
    )
    crawled = UpstreamHost(running, env.http)
    env.hosts.append(crawled)  # stopped with the others
    key = crawled.url.split("://")[1]

    async def listed() -> bool:
        reply = await env.call("com.atproto.sync.getHostStatus", params={"hostname": key})
        return reply.status == 200 and reply.body["status"] == "active"

    await env.wait_for(listed, what="the crawled host to be listed")
    bob = await crawled.create_account("bob.test")
    await crawled.create_record(bob, "first")
    await env.wait_relayed(bob)
    await env.wait_relayed(alice)
    status = await env.call("com.atproto.sync.getHostStatus", params={"hostname": key})
    assert status.body["accountCount"] == 1
    repos = await env.call("com.atproto.sync.listRepos")
    assert {r["did"] for r in repos.body["repos"]} == {alice.did, bob.did}
