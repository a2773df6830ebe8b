"""The Dagster UI, end to end: real ``dg dev``, headless Chromium, "Materialize all".

Happy path on the real MovieLens data: the run succeeds, every asset (``deployed_model``
included) is materialized by it and every asset check passed, as the UI shows and as GraphQL
confirms. Failure path on a small synthetic release: the blocking "official release" check
fails, the run fails, and nothing downstream is trained or deployed.

Screenshots of every step go to ``test-output/ui/<test name>/``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pytest

from cfrec_assets.defs.assets import ALL_ASSETS
from cfrec_assets.defs.checks import ALL_CHECKS
from cfrec_serving.targets.target import open_target
from cfrec_testkit.dagster_dev import REPO_ROOT, DagsterDev, dagster_dev, wait_for_code_locations
from cfrec_testkit.shared_data import real_movielens_or_skip

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

# A dev dependency: without it these tests skip rather than break collection of the suite.
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.ui, pytest.mark.timeout(1500)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO_ROOT / "test-output" / "ui"
# "Materialize all" (graph ~20 s, plus the ~100 s tuning study) took over 300 s on 2 cores shared
# with other builds (load average 12-18): a cap for a stuck run, not a speed requirement.
RUN_TIMEOUT_S = 720
UI_TIMEOUT_MS = 30_000
TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
RUN_ID = re.compile(r"/runs/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")

MATERIALIZABLE = [asset for asset in ALL_ASSETS if not isinstance(asset, dg.AssetSpec)]  # not the external table
ASSET_KEYS = sorted(spec.key.to_user_string() for asset in MATERIALIZABLE for spec in asset.specs)
GROUPS = sorted({spec.group_name for asset in MATERIALIZABLE for spec in asset.specs})
CHECKS_BY_ASSET: dict[str, set[str]] = {}
for _checks in ALL_CHECKS:
    for _spec in _checks.check_specs:
        CHECKS_BY_ASSET.setdefault(_spec.asset_key.to_user_string(), set()).add(_spec.name)

RUN_STATUS_QUERY = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status }
    ... on PythonError { message }
  }
}
"""

ASSET_STATE_QUERY = """
query AssetState {
  assetNodes {
    assetKey { path }
    assetMaterializations(limit: 1) { runId }
    assetChecksOrError {
      __typename
      ... on AssetChecks {
        checks {
          name
          blocking
          executionForLatestMaterialization { runId status evaluation { success description } }
        }
      }
    }
  }
}
"""


# --- prerequisites ---------------------------------------------------------------------------


@pytest.fixture
def chromium() -> Path:
    if not os.access(CHROMIUM, os.X_OK):
        if os.environ.get("CI"):  # .ci/run installs it: a skip there would hide a broken install
            pytest.fail(f"Chromium is required in CI at {CHROMIUM}")
        pytest.skip(
            f"no Chromium at {CHROMIUM} (scripts/install-system-deps.sh installs it); never `playwright install`"
        )
    return CHROMIUM


# --- browser ---------------------------------------------------------------------------------


@dataclass
class Ui:
    """A page on a running ``dg dev`` that numbers and saves a screenshot per step."""

    page: Page
    dev: DagsterDev
    shots: Path
    step: int = 0

    def goto(self, path: str) -> None:
        self.page.goto(self.dev.url + path)

    def shot(self, name: str) -> Path:
        self.step += 1
        path = self.shots / f"{self.step:02d}_{name}.png"
        self.page.screenshot(path=path, full_page=False)
        return path


@pytest.fixture
def ui_factory(request: pytest.FixtureRequest, chromium: Path, tmp_path: Path) -> Iterator:
    """``ui_factory(dev)``: a fresh Chromium profile on ``dev``; screenshots per test."""
    shots = SCREENSHOTS / request.node.name
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    with playwright_api.sync_playwright() as playwright:
        contexts = []

        def make(dev: DagsterDev) -> Ui:
            context = playwright.chromium.launch_persistent_context(
                tmp_path / f"chromium-profile-{len(contexts)}",
                executable_path=str(chromium),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 900},
            )
            contexts.append(context)
            page = context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            ui = Ui(page, dev, shots)

            def skip(dialog: Locator) -> None:
                ui.shot("community_dialog")
                dialog.get_by_role("button", name="Skip").click()

            # A fresh instance greets a first visit with this dialog; it may pop up over any page.
            page.add_locator_handler(page.get_by_role("dialog").filter(has_text="Join the Dagster community"), skip)
            return ui

        try:
            yield make
        finally:
            for index, context in enumerate(contexts):
                for page in context.pages:  # the last state, for a failure's post-mortem
                    page.screenshot(path=shots / f"zz_last_page_{index}.png")
                context.close()


# --- steps -----------------------------------------------------------------------------------


def materialize_all_from_lineage(ui: Ui) -> str:
    """Click "Materialize all" on the global asset lineage; return the launched run's id."""
    page = ui.page
    ui.goto("/asset-groups")
    materialize_all = page.get_by_role("button", name="Materialize all")
    expect(materialize_all).to_be_enabled(timeout=UI_TIMEOUT_MS)
    for group in GROUPS:
        expect(page.get_by_text(group, exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
    ui.shot("asset_lineage")

    materialize_all.click()
    launched = page.get_by_text(re.compile(r"^Launched run"))
    # Assets needing config would open the launchpad first; ours have defaults, but accept it.
    launchpad_button = page.get_by_role("dialog").get_by_role("button", name=re.compile(r"^(Launch run|Materialize)"))
    expect(launched.or_(launchpad_button)).to_be_visible(timeout=UI_TIMEOUT_MS)
    if launchpad_button.is_visible():
        ui.shot("launchpad")
        launchpad_button.click()
    expect(launched).to_be_visible(timeout=UI_TIMEOUT_MS)
    ui.shot("run_launched")

    toasts = page.get_by_role("region", name=re.compile(r"^Notifications"))
    toasts.get_by_role("link", name="View", exact=True).click()
    page.wait_for_url(RUN_ID, timeout=UI_TIMEOUT_MS)
    return RUN_ID.search(page.url).group(1)


def wait_for_run(dev: DagsterDev, run_id: str, timeout: float = RUN_TIMEOUT_S) -> str:
    """Poll GraphQL until the run ends; return its status."""
    deadline = time.monotonic() + timeout
    while True:
        run = dev.graphql(RUN_STATUS_QUERY, {"runId": run_id})["runOrError"]
        assert run["__typename"] == "Run", f"run {run_id} not found: {run}"
        if run["status"] in TERMINAL_RUN_STATUSES:
            return run["status"]
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} still {run['status']} after {timeout}s; dg dev log:\n{dev.log_tail()}")
        time.sleep(1)


def asset_state(dev: DagsterDev) -> dict[str, dict]:
    """GraphQL view of every asset: latest materialization's run, and its checks by name."""
    nodes = dev.graphql(ASSET_STATE_QUERY)["assetNodes"]
    state = {}
    for node in nodes:
        checks = node["assetChecksOrError"]
        assert checks["__typename"] == "AssetChecks", checks
        state["/".join(node["assetKey"]["path"])] = {
            "run_id": node["assetMaterializations"][0]["runId"] if node["assetMaterializations"] else None,
            "checks": {check["name"]: check for check in checks["checks"]},
        }
    return state


def open_check(ui: Ui, asset: str, check: str) -> None:
    """Open the asset's Checks tab with ``check``'s latest execution in the detail pane."""
    ui.goto(f"/assets/{asset}?view=checks&checkDetail={check}")
    expect(ui.page.get_by_role("tab", name="Checks")).to_have_attribute("aria-selected", "true", timeout=UI_TIMEOUT_MS)
    expect(ui.page.get_by_text("Evaluation result", exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)


def run_link(ui: Ui, run_id: str, selection: str | None = None) -> Locator:
    """Links into ``run_id``'s page (the UI links each status to the run that produced it)."""
    css = f'a[href^="/runs/{run_id}"]' + (f'[href*="selection={selection}&"]' if selection else "")
    return ui.page.locator(css)


def metadata_value(ui: Ui, key: str) -> Locator:
    """The value cell of metadata row ``key`` in an asset's metadata table."""
    row = ui.page.get_by_role("row").filter(has=ui.page.get_by_role("cell", name=key, exact=True))
    return row.get_by_role("cell").last


# --- tests -----------------------------------------------------------------------------------


def test_materialize_all_deploys_a_checked_model(ui_factory, tmp_path: Path) -> None:
    """Real data: the run succeeds, every asset is fresh, every check passed, the model is served."""
    movielens = real_movielens_or_skip()
    assert "deployed_model" in ASSET_KEYS, "the graph must end in deployed_model"
    assert any(spec.blocking for checks in ALL_CHECKS for spec in checks.check_specs), (
        "no blocking check gates deployment"
    )

    # "Materialize all" includes the 100-trial tuning study: ~100 s on ML-100K alone, about twice
    # that on the default seeds (ml100k,ml-latest); this test is about the UI, not the study's data.
    env = {"CFREC_MOVIELENS_BASE_URL": movielens.as_uri() + "/", "CFREC_SEEDS": "ml100k"}
    with dagster_dev(tmp_path / "dev", env=env) as dev:
        wait_for_code_locations(dev)
        ui = ui_factory(dev)
        run_id = materialize_all_from_lineage(ui)
        ui.shot("run_started")
        status = wait_for_run(dev, run_id)
        assert status == "SUCCESS", f"run {run_id} ended {status}; dg dev log:\n{dev.log_tail()}"

        # The run page, live-updated by the UI.
        expect(ui.page.get_by_text("Success", exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
        ui.shot("run_succeeded")

        # GraphQL: every defined asset materialized by this run, every defined check passed in it.
        state = asset_state(dev)
        # External: the table is observed by the sensor, the study reported by its own job (tune_svd).
        assert set(state) - set(ASSET_KEYS) == {"supabase_ratings_table", "svd_tuning"}
        for asset in ASSET_KEYS:
            assert state[asset]["run_id"] == run_id, f"{asset} was not materialized by run {run_id}"
        for asset, names in CHECKS_BY_ASSET.items():
            assert set(state[asset]["checks"]) == names
            for name, check in state[asset]["checks"].items():
                execution = check["executionForLatestMaterialization"]
                assert execution is not None, f"{asset}:{name} did not run"
                assert (execution["runId"], execution["status"], execution["evaluation"]["success"]) == (
                    run_id,
                    "SUCCEEDED",
                    True,
                ), f"{asset}:{name}: {execution}"

        # The catalog: each asset's status links to this run.
        ui.goto("/assets")
        for asset in ASSET_KEYS:
            expect(run_link(ui, run_id, selection=asset)).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(ui.page.get_by_text(re.compile(r"^Materialized"))).to_have_count(len(ASSET_KEYS))
        ui.shot("catalog_all_materialized")

        # deployed_model: promoted the version this run trained, and that version is served.
        ui.goto("/assets/svd_model")
        trained_version = metadata_value(ui, "version")
        expect(trained_version).to_have_text(re.compile(rf"-{run_id[:8]}$"), timeout=UI_TIMEOUT_MS)
        version = trained_version.inner_text().strip()
        ui.goto("/assets/deployed_model")
        expect(ui.page.get_by_text("Latest materialization")).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(run_link(ui, run_id, selection="deployed_model").first).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(metadata_value(ui, "action")).to_have_text("promote", timeout=UI_TIMEOUT_MS)
        expect(metadata_value(ui, "version")).to_have_text(version, timeout=UI_TIMEOUT_MS)
        ui.shot("deployed_model")
        manifest = open_target(dev.data_dir / "serving").read_manifest()
        assert manifest is not None and manifest["version"] == version

        # Every check: passed, on the materialization of this run.
        for asset, names in sorted(CHECKS_BY_ASSET.items()):
            for name in sorted(names):
                open_check(ui, asset, name)
                expect(ui.page.get_by_text("Passed", exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)
                expect(run_link(ui, run_id).first).to_be_visible(timeout=UI_TIMEOUT_MS)
                ui.shot(f"check_{asset}_{name}")
            expect(ui.page.get_by_text("Succeeded", exact=True)).to_have_count(len(names))
    assert not dev.forced_kill, f"the server ignored SIGTERM; killed {dev.killed}:\n{dev.log_tail()}"


def test_failed_blocking_check_stops_the_run_before_deployment(ui_factory, tmp_path: Path) -> None:
    """A mirror serving a cut-down ML-100K: the blocking release check fails in the UI and the
    run stops there, so no model is trained, checked or deployed."""
    from cfrec_testkit.movielens_fixtures import write_movielens_fixture

    mirror = write_movielens_fixture(tmp_path / "mirror", n_users=30, n_items=60, n_ratings=600).root
    with dagster_dev(tmp_path / "dev", env={"CFREC_MOVIELENS_BASE_URL": mirror.as_uri() + "/"}) as dev:
        wait_for_code_locations(dev)
        ui = ui_factory(dev)
        run_id = materialize_all_from_lineage(ui)
        status = wait_for_run(dev, run_id)
        assert status == "FAILURE", f"run {run_id} ended {status}, expected FAILURE"
        expect(ui.page.get_by_text("Failure", exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
        ui.shot("run_failed")

        open_check(ui, "ml100k_raw", "ml100k_is_official_release")
        expect(ui.page.get_by_text("Failed", exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(ui.page.get_by_text(re.compile("differs from the official release")).first).to_be_visible(
            timeout=UI_TIMEOUT_MS
        )
        ui.shot("release_check_failed")

        state = asset_state(dev)
        assert state["ml100k_raw"]["run_id"] == run_id  # the asset itself was written; its check refused it
        release_check = state["ml100k_raw"]["checks"]["ml100k_is_official_release"]["executionForLatestMaterialization"]
        assert release_check["status"] == "FAILED" and release_check["evaluation"]["success"] is False
        for downstream in ("combined_ratings", "svd_model", "cv_metrics", "deployed_model"):
            assert state[downstream]["run_id"] is None, f"{downstream} ran although a blocking check failed"

        ui.goto("/assets/deployed_model")
        # Its status reads "Failed in <run>", linking to the run that refused to deploy.
        expect(ui.page.get_by_text(re.compile(r"^Failed in")).first).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(ui.page.get_by_role("link", name=run_id[:8], exact=True)).to_have_attribute("href", f"/runs/{run_id}")
        # No materialization metadata ("entries" once the asset has definition metadata: its code reference).
        expect(ui.page.get_by_text(re.compile(r"^No metadata (found|entries)$"))).to_be_visible(timeout=UI_TIMEOUT_MS)
        ui.shot("deployed_model_not_materialized")
        assert open_target(dev.data_dir / "serving").read_manifest() is None
    assert not dev.forced_kill, f"the server ignored SIGTERM; killed {dev.killed}:\n{dev.log_tail()}"
