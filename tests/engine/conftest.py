"""Fixtures shared by the engine tests."""
import pytest

from handgrad import engine


@pytest.fixture
def registered():
    """``registered(OpClass)`` registers a test-only op class and returns the op; it is
    always unregistered afterwards (so no test op is left without a spec)."""
    names = []

    def register(cls, **kwargs):
        engine.register(cls, **kwargs)
        names.append(cls.name)
        return engine.REGISTRY[cls.name]

    try:
        yield register
    finally:
        for name in names:
            engine.unregister(name)


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (selenium), one per test module, in a 1366x900 window; skipped
    without chromedriver (Debian: chromium-driver) or Graphviz's dot. Tests that emulate
    another screen size set it themselves (Emulation.setDeviceMetricsOverride)."""
    import shutil
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    driver_path = shutil.which("chromedriver")
    if driver_path is None or not shutil.which("dot"):
        pytest.skip("needs chromedriver (Debian chromium-driver) and Graphviz dot")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1366,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()
