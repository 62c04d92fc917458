app_name = "online"
urlpatterns = []

api_urlpatterns = []
