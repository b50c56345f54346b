"""Scene: the cameras of a dataset split into train/test, its initial point cloud and its extent."""
from scene.dataset_readers import read_scene


class Scene:
    def __init__(self, dataset):
        info = read_scene(dataset.source_path, dataset.images, dataset.eval, dataset.resolution,
                          dataset.white_background, dataset.data_device, dataset.depths,
                          dataset.num_random_points)
        self.model_path = dataset.model_path
        self.train_cameras = info.train_cameras
        self.test_cameras = info.test_cameras
        self.points, self.colors = info.points, info.colors
        self.cameras_extent = info.radius
        self.random_start = info.random_points  # every model starts from random points (no SfM reconstruction)

    def getTrainCameras(self):
        return self.train_cameras

    def getTestCameras(self):
        return self.test_cameras
